// Numbers for people: binary byte units, rates, durations.

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Math.abs(v) >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i] ?? ''}`;
}

export function rate(n: number): string {
  return `${bytes(n)}/s`;
}

export function count(n: number): string {
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n >= 100 || Number.isInteger(n) ? n.toFixed(0) : n.toFixed(1);
}

export function seconds(s: number): string {
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

export function duration(s: number): string {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** `4M`, `100 MiB`, `2G`, `65536`: bytes, or null. */
export function parseBytes(text: string): number | null {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) return null;
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[(m[2] ?? '').toLowerCase()] ?? 1;
  const v = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : null;
}
