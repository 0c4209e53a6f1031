// A member's dirty map as a picture: one pixel per cell of the map picture (at most 1024
// cells, 64 to a row), scaled up by CSS without smoothing. Clean cells are drawn in the
// "clean" colour, dirty ones from a visible minimum up to full "dirty" by their fraction of
// dirty chunks, so a single dirty chunk in a cell of 100,000 still shows.

import { useEffect, useRef } from 'preact/hooks';
import type { Picture } from '../model.js';

export const COLUMNS = 64;

type Rgb = readonly [number, number, number];
const LIGHT = { clean: [196, 228, 203] as Rgb, dirty: [214, 39, 40] as Rgb, empty: [238, 238, 238] as Rgb };
const DARK = { clean: [38, 84, 52] as Rgb, dirty: [255, 92, 80] as Rgb, empty: [40, 40, 44] as Rgb };
const MIN_VISIBLE = 0.35;

export function cellColour(frac: number, dark: boolean): Rgb {
  const c = dark ? DARK : LIGHT;
  if (frac <= 0) return c.clean;
  const f = MIN_VISIBLE + (1 - MIN_VISIBLE) * Math.min(1, frac);
  return [0, 1, 2].map((i) => Math.round((c.clean[i] as number) + ((c.dirty[i] as number) - (c.clean[i] as number)) * f)) as unknown as Rgb;
}

export function MapCanvas(props: { picture: Picture | undefined; label: string; dark: boolean }): preact.JSX.Element {
  const ref = useRef<HTMLCanvasElement>(null);
  const p = props.picture;
  const cells = p?.cells.length ?? 0;
  const cols = Math.max(1, Math.min(COLUMNS, cells));
  const rows = Math.max(1, Math.ceil(cells / cols));
  useEffect(() => {
    const cv = ref.current;
    const ctx = cv?.getContext('2d');
    if (cv === null || ctx === null || ctx === undefined) return;
    const img = ctx.createImageData(cols, rows);
    const pal = props.dark ? DARK : LIGHT;
    for (let i = 0; i < cols * rows; i++) {
      let rgb: Rgb = pal.empty;
      if (p !== undefined && i < cells) {
        const chunks = Math.min(p.chunks_per_cell, p.chunks - i * p.chunks_per_cell);
        rgb = cellColour(chunks > 0 ? (p.cells[i] ?? 0) / chunks : 0, props.dark);
      }
      img.data.set([rgb[0], rgb[1], rgb[2], 255], i * 4);
    }
    ctx.putImageData(img, 0, 0);
  }, [p, props.dark, cols, rows, cells]);
  const title = p === undefined ? 'no map yet' : `${p.dirty} of ${p.chunks} chunks dirty; each cell ${p.chunks_per_cell} chunk${p.chunks_per_cell === 1 ? '' : 's'}`;
  return <canvas ref={ref} class="map" width={cols} height={rows} style={{ aspectRatio: `${cols} / ${rows}` }} role="img" aria-label={`${props.label}: ${title}`} title={title} data-dirty={p?.dirty ?? ''} />;
}
