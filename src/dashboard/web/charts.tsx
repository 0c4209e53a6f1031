// The IO charts: one uPlot per chart, fed a point per tick. A chart's series are its labels
// (device/op, pool/leg/op, pool/node); a label met for the first time rebuilds the chart.

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import type { ChartData } from '../model.js';
import { bytes, count, seconds } from './format.js';

const OFFSCREEN_EVERY = 10;
const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#637939'];

function fmt(unit: ChartData['unit'], v: number): string {
  if (unit === 'bytes') return `${bytes(v)}/s`;
  if (unit === 'seconds') return seconds(v);
  return `${count(v)}/s`;
}

export function Chart(props: { chart: ChartData; version: number; dark: boolean }): preact.JSX.Element {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<{ u: uPlot; labels: string; dark: boolean } | null>(null);
  // Charts out of sight are redrawn every OFFSCREEN_EVERY ticks only (a page left open
  // costs little CPU); one that scrolls into view catches up at once.
  const [visible, setVisible] = useState(false);
  const c = props.chart;
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const io = new IntersectionObserver((es) => setVisible(es.some((e) => e.isIntersecting)));
    io.observe(el);
    return () => io.disconnect();
  }, []);
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    if (!visible && plot.current !== null && props.version % OFFSCREEN_EVERY !== 0) return;
    const data = [c.t, ...c.values] as unknown as uPlot.AlignedData;
    const key = c.labels.join('\n');
    if (plot.current === null || plot.current.labels !== key || plot.current.dark !== props.dark) {
      plot.current?.u.destroy();
      const axis = props.dark ? '#c8c8c8' : '#333';
      const grid = props.dark ? '#3a3a3a' : '#e4e4e4';
      const u = new uPlot(
        {
          width: Math.max(200, el.clientWidth),
          height: 180,
          legend: { show: true, live: false },
          cursor: { drag: { x: false, y: false } },
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
          axes: [
            { stroke: axis, grid: { stroke: grid } },
            { stroke: axis, grid: { stroke: grid }, size: 84, values: (_u, vals) => vals.map((v) => fmt(c.unit, v)) },
          ],
          series: [{}, ...c.labels.map((l, i) => ({ label: l, stroke: COLOURS[i % COLOURS.length] ?? '#888', width: 1.5, value: (_u: uPlot, v: number | null) => (v === null ? '–' : fmt(c.unit, v)) }))],
        },
        data,
        el,
      );
      plot.current = { u, labels: key, dark: props.dark };
    } else plot.current.u.setData(data);
  }, [props.version, props.dark, c, visible]);
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const ro = new ResizeObserver(() => plot.current?.u.setSize({ width: Math.max(200, el.clientWidth), height: 180 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.u.destroy();
      plot.current = null;
    };
  }, []);
  return (
    <figure class="chart" data-testid={`chart-${c.id}`}>
      <figcaption>{c.title}</figcaption>
      <div ref={box} />
      {c.labels.length === 0 ? <p class="muted">no data yet</p> : null}
    </figure>
  );
}
