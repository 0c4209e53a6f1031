// The dashboard page: one live view of the cluster fed by server-sent events (a snapshot at
// connect, an update per tick). Health at the top, then each pool with its members (state,
// reason, dirty map picture, resync progress and controls), verify, the devices, the IO
// charts (client IO and resync apart) and the event feed. Controls are buttons and inputs
// (keyboard reachable); every action asks for confirmation in a dialog.

import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { ActionReply, ActionRequest, ChartData, DashState, EventRow, Health, MemberView, Picture, PoolView, Snapshot, Update } from '../model.js';
import { MapCanvas } from './map-canvas.js';
import { Chart } from './charts.js';
import { bytes, duration, parseBytes, rate } from './format.js';

interface Store {
  state: DashState | null;
  pictures: Map<string, Picture>;
  charts: Map<string, ChartData>;
  events: EventRow[];
  version: number;
}

const EVENTS_KEPT = 1000;
const HISTORY = 300;

function applySnapshot(s: Store, snap: Snapshot): void {
  s.state = snap.state;
  s.pictures = new Map(Object.entries(snap.pictures));
  s.charts = new Map(snap.charts.map((c) => [c.id, c]));
  s.events = snap.events.slice(-EVENTS_KEPT);
}

function applyUpdate(s: Store, u: Update): void {
  s.state = u.state;
  for (const [k, p] of Object.entries(u.pictures)) s.pictures.set(k, p);
  for (const k of u.gone) s.pictures.delete(k);
  for (const c of u.new_charts) if (!s.charts.has(c.id)) s.charts.set(c.id, c);
  for (const [id, pt] of Object.entries(u.points)) {
    const c = s.charts.get(id);
    if (c === undefined || c.t[c.t.length - 1] === u.t) continue;
    // New series start with gaps; the chart object is replaced so its component redraws.
    const labels = [...c.labels];
    const values = c.values.map((v) => [...v]);
    pt.labels.forEach((l) => {
      if (!labels.includes(l)) {
        labels.push(l);
        values.push(new Array<number | null>(c.t.length).fill(null));
      }
    });
    const t = [...c.t, u.t];
    labels.forEach((l, i) => {
      const j = pt.labels.indexOf(l);
      values[i]?.push(j < 0 ? null : (pt.values[j] ?? null));
    });
    const cut = Math.max(0, t.length - HISTORY);
    s.charts.set(id, { ...c, labels, t: t.slice(cut), values: values.map((v) => v.slice(cut)) });
  }
  s.events = [...s.events, ...u.events].slice(-EVENTS_KEPT);
}

function useDark(): boolean {
  const q = useMemo(() => window.matchMedia('(prefers-color-scheme: dark)'), []);
  const [dark, setDark] = useState(q.matches);
  useEffect(() => {
    const f = (e: MediaQueryListEvent): void => setDark(e.matches);
    q.addEventListener('change', f);
    return () => q.removeEventListener('change', f);
  }, [q]);
  return dark;
}

// ------------------------------------------------------------------ actions and confirmation

interface Pending {
  title: string;
  detail: string;
  req: ActionRequest;
}

async function post(req: ActionRequest): Promise<ActionReply> {
  const r = await fetch('/api/action', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req), credentials: 'same-origin' });
  try {
    return (await r.json()) as ActionReply;
  } catch {
    return { ok: false, error: `HTTP ${r.status}` };
  }
}

function ConfirmDialog(props: { pending: Pending | null; onDone: (r: ActionReply | null) => void }): preact.JSX.Element {
  const ref = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const d = ref.current;
    if (d === null) return;
    if (props.pending !== null && !d.open) d.showModal();
    if (props.pending === null && d.open) d.close();
  }, [props.pending]);
  const p = props.pending;
  const go = async (): Promise<void> => {
    if (p === null) return;
    setBusy(true);
    const r = await post(p.req).catch((e: unknown): ActionReply => ({ ok: false, error: String(e) }));
    setBusy(false);
    props.onDone(r);
  };
  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" onCancel={() => props.onDone(null)} data-testid="confirm">
      <h2 id="confirm-title">{p?.title ?? ''}</h2>
      <p>{p?.detail ?? ''}</p>
      <div class="buttons">
        <button type="button" onClick={() => props.onDone(null)} disabled={busy}>
          Cancel
        </button>
        <button type="button" class="primary" onClick={() => void go()} disabled={busy} autofocus data-testid="confirm-ok">
          {busy ? 'Working…' : 'Confirm'}
        </button>
      </div>
    </dialog>
  );
}

// ------------------------------------------------------------------ pieces

const HEALTH_TEXT: Record<Health, string> = { normal: 'normal', syncing: 'syncing', degraded: 'degraded', fenced: 'fenced', down: 'down' };

function Badge(props: { health: Health; text?: string }): preact.JSX.Element {
  return <span class={`badge h-${props.health}`}>{props.text ?? HEALTH_TEXT[props.health]}</span>;
}

function HealthBar(props: { state: DashState }): preact.JSX.Element {
  const h = props.state.health;
  const counts = (r: Record<Health, number>, what: string): preact.JSX.Element => (
    <div class="card count" data-testid={`count-${what}`}>
      <h3>{what}</h3>
      <p>
        {(['normal', 'syncing', 'degraded', 'fenced', 'down'] as const)
          .filter((k) => r[k] > 0)
          .map((k) => (
            <span key={k} class={`pill h-${k}`} data-health={k} data-n={r[k]}>
              {r[k]} {k}
            </span>
          ))}
        {Object.values(r).every((n) => n === 0) ? <span class="muted">none</span> : null}
      </p>
    </div>
  );
  return (
    <section class="health" aria-label="cluster health">
      <div class="cards">
        <div class="card count" data-testid="count-daemons">
          <h3>daemons</h3>
          <p>
            <span class="pill h-normal" data-testid="daemons-up">{h.daemons_up} up</span>
            {h.daemons_down > 0 ? (
              <span class="pill h-down" data-testid="daemons-down">
                {h.daemons_down} down
              </span>
            ) : null}
          </p>
        </div>
        {counts(h.members, 'members')}
        {counts(h.devices, 'devices')}
      </div>
      {h.problems.length > 0 ? (
        <ul class="problems" data-testid="problems">
          {h.problems.map((p) => (
            <li key={p}>{p}</li>
          ))}
        </ul>
      ) : (
        <p class="allgood" data-testid="all-normal">
          Every daemon answers, every member is NORMAL and clean, every device is ready.
        </p>
      )}
      <p class="daemons">
        {props.state.daemons.map((d) => (
          <span key={d.name} class={`pill ${d.reachable ? 'h-normal' : 'h-down'}`} title={d.error ?? `pid ${d.pid ?? '?'}, ${d.roles.join(', ')}`} data-testid={`daemon-${d.name}`} data-reachable={String(d.reachable)}>
            {d.name} {d.reachable ? (d.state ?? '') : (d.state ?? 'unreachable')}
          </span>
        ))}
      </p>
    </section>
  );
}

function SyncControls(props: { m: MemberView; ask: (p: Pending) => void }): preact.JSX.Element {
  const m = props.m;
  const [rateText, setRateText] = useState('');
  const id = `rate-${m.pool}-${m.member_id}`;
  const parsed = parseBytes(rateText);
  return (
    <div class="controls">
      <button type="button" onClick={() => props.ask({ title: `Start the resync of member ${m.member_id}?`, detail: `${m.node}: rmr-server/pools/${m.pool}/sync <- start (as rmr sync ${m.pool} start)`, req: { op: 'sync_start', pool: m.pool, node: m.node } })} disabled={m.server_state === null} data-testid={`sync-start-${m.pool}-${m.member_id}`}>
        Start
      </button>
      <button type="button" onClick={() => props.ask({ title: `Stop the resync of member ${m.member_id}?`, detail: `${m.node}: rmr-server/pools/${m.pool}/sync <- stop. The member stays dirty until the sync runs again (an operator stop is kept across restarts).`, req: { op: 'sync_stop', pool: m.pool, node: m.node } })} disabled={m.server_state === null} data-testid={`sync-stop-${m.pool}-${m.member_id}`}>
        Stop
      </button>
      <form
        class="rate"
        onSubmit={(e) => {
          e.preventDefault();
          if (parsed === null) return;
          props.ask({ title: `Limit the resync of member ${m.member_id} to ${rate(parsed)}?`, detail: `${m.node}: rmr-server/pools/${m.pool}/sync_rate <- ${parsed} (as rmr sync ${m.pool} rate)`, req: { op: 'sync_rate', pool: m.pool, node: m.node, bytes_per_s: parsed } });
        }}
      >
        <label for={id}>rate limit</label>
        <input id={id} type="text" inputMode="text" placeholder="e.g. 50M" size={6} value={rateText} onInput={(e) => setRateText((e.target as HTMLInputElement).value)} aria-invalid={rateText !== '' && parsed === null} data-testid={`sync-rate-input-${m.pool}-${m.member_id}`} />
        <button type="submit" disabled={parsed === null || m.server_state === null} data-testid={`sync-rate-set-${m.pool}-${m.member_id}`}>
          Set
        </button>
      </form>
    </div>
  );
}

function MemberCard(props: { m: MemberView; picture: Picture | undefined; dark: boolean; ask: (p: Pending) => void }): preact.JSX.Element {
  const m = props.m;
  const s = m.sync;
  const total = m.total_chunks ?? s?.total_chunks ?? 0;
  const dirty = m.dirty_chunks ?? 0;
  const clean = Math.max(0, total - dirty);
  const pct = total > 0 ? (100 * clean) / total : 100;
  return (
    <article class={`member h-${m.health}`} data-testid={`member-${m.pool}-${m.member_id}`} data-health={m.health} data-dirty={dirty} data-seen-by={m.map_seen_by ?? ''}>
      <header>
        <h3>
          member {m.member_id} <span class="muted">on {m.node}</span>
        </h3>
        <Badge health={m.health} />
      </header>
      {m.reason !== null ? <p class="reason">{m.reason}</p> : null}
      <dl class="facts">
        <dt>server pool</dt>
        <dd>{m.server_state ?? '—'}</dd>
        <dt>client leg</dt>
        <dd>{m.leg_state ?? '—'}</dd>
        <dt>dirty</dt>
        <dd data-testid={`dirty-${m.pool}-${m.member_id}`}>
          {dirty} / {total} chunks
        </dd>
      </dl>
      <MapCanvas picture={props.picture} label={`dirty map of member ${m.member_id}`} dark={props.dark} />
      <p class="muted small">{m.map_seen_by === null ? 'no daemon can tell this map now (last known picture)' : m.map_seen_by === m.node ? `its own map (${m.node})` : `as ${m.map_seen_by} records it`}</p>
      <div class="sync">
        <label class="progress">
          <span>resync {s?.state ?? '—'}</span>
          <progress max={total || 1} value={clean} data-testid={`sync-progress-${m.pool}-${m.member_id}`} data-value={clean} aria-label={`member ${m.member_id}: ${pct.toFixed(1)} % clean`} />
          <span>{pct.toFixed(1)} % clean</span>
        </label>
        {s !== null ? (
          <p class="small">
            {rate(s.bytes_per_s)}
            {s.eta_s !== null ? `, ETA ${duration(s.eta_s)}` : ''}
            {s.rate_limit_bytes_per_s !== null ? `, limit ${rate(s.rate_limit_bytes_per_s)}` : ''}, {bytes(s.synced_bytes)} copied
            {s.last_error !== null ? <span class="error">, last error: {s.last_error}</span> : null}
          </p>
        ) : null}
        <SyncControls m={m} ask={props.ask} />
      </div>
    </article>
  );
}

function VerifyPanel(props: { pool: PoolView; ask: (p: Pending) => void }): preact.JSX.Element {
  const v = props.pool.verify;
  const p = props.pool;
  const running = v?.state === 'running' || v?.state === 'stopping';
  return (
    <div class="verify" data-testid={`verify-${p.name}`} data-state={v?.state ?? ''}>
      <h3>Verify</h3>
      <p class="small">Compares the members chunk by chunk (hashes, with IO running); chunks that differ become dirty for the members that disagree and resync.</p>
      {v !== null && v.chunks_total > 0 ? <progress max={v.chunks_total} value={v.chunks_done} aria-label="verify progress" /> : null}
      <p class="small">
        {v === null ? 'no client to verify from' : `${v.state}: ${v.chunks_done}/${v.chunks_total} chunks, ${v.differing} differing`}
      </p>
      {v?.report !== null && v?.report !== undefined ? (
        <p class="report" data-testid={`verify-report-${p.name}`}>
          {v.report}
        </p>
      ) : null}
      <div class="controls">
        <button type="button" disabled={v === null || running} onClick={() => props.ask({ title: `Verify pool ${p.name}?`, detail: `client: rmr-client/pools/${p.name}/verify <- start (as rmr verify ${p.name}). IO goes on; the members' chunks are read to hash them.`, req: { op: 'verify_start', pool: p.name } })} data-testid={`verify-start-${p.name}`}>
          Start verify
        </button>
        <button type="button" disabled={!running} onClick={() => props.ask({ title: `Stop the verify of ${p.name}?`, detail: `client: rmr-client/pools/${p.name}/verify <- stop`, req: { op: 'verify_stop', pool: p.name } })}>
          Stop verify
        </button>
      </div>
    </div>
  );
}

function Events(props: { events: EventRow[] }): preact.JSX.Element {
  const [text, setText] = useState('');
  const [kind, setKind] = useState('');
  const kinds = useMemo(() => [...new Set(props.events.map((e) => e.kind))].sort(), [props.events]);
  const q = text.trim().toLowerCase();
  const shown = props.events.filter((e) => (kind === '' || e.kind === kind) && (q === '' || e.text.toLowerCase().includes(q))).slice(-200).reverse();
  return (
    <section class="events" aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <div class="filters">
        <label>
          filter <input type="search" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} placeholder="node, pool, word" data-testid="events-filter" />
        </label>
        <label>
          kind{' '}
          <select value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value)} data-testid="events-kind">
            <option value="">all</option>
            {kinds.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
        <span class="muted small">
          {shown.length} of {props.events.length}
        </span>
      </div>
      <ol class="feed" data-testid="events-list">
        {shown.map((e) => (
          <li key={`${e.node}/${e.seq}/${e.time}`}>
            <time>{e.time.slice(11, 19)}</time> <b>{e.node}</b> <code>{e.text.split(' ').slice(3).join(' ')}</code>
          </li>
        ))}
      </ol>
    </section>
  );
}

// ------------------------------------------------------------------ the page

function App(): preact.JSX.Element {
  const store = useRef<Store>({ state: null, pictures: new Map(), charts: new Map(), events: [], version: 0 });
  const [, setVersion] = useState(0);
  const [live, setLive] = useState<'connecting' | 'live' | 'reconnecting'>('connecting');
  const [pending, setPending] = useState<Pending | null>(null);
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null);
  const dark = useDark();
  useEffect(() => {
    const es = new EventSource('/api/stream');
    const bump = (): void => {
      store.current.version++;
      setVersion(store.current.version);
    };
    es.addEventListener('snapshot', (e) => {
      applySnapshot(store.current, JSON.parse((e as MessageEvent<string>).data) as Snapshot);
      setLive('live');
      bump();
    });
    es.addEventListener('update', (e) => {
      applyUpdate(store.current, JSON.parse((e as MessageEvent<string>).data) as Update);
      bump();
    });
    es.onerror = () => setLive('reconnecting');
    return () => es.close();
  }, []);
  const s = store.current;
  const st = s.state;
  if (st === null) return <p class="loading">Connecting to the dashboard…</p>;
  const done = (r: ActionReply | null): void => {
    setPending(null);
    if (r !== null) setNotice({ ok: r.ok, text: r.ok ? `done: ${(r.done ?? []).join('; ')}${r.result !== undefined && r.result !== '' ? ` → ${r.result}` : ''}` : `refused: ${r.error ?? 'unknown error'}` });
  };
  const charts = [...s.charts.values()];
  const io = charts.filter((c) => c.id !== 'sync_bytes');
  const sync = charts.filter((c) => c.id === 'sync_bytes');
  return (
    <>
      <header class="top">
        <h1>
          RMR <span class="muted">cluster</span> {st.cluster}
        </h1>
        <p class={`live ${live}`} data-testid="live" data-tick={st.tick}>
          {live === 'live' ? '● live' : live === 'connecting' ? '○ connecting' : '○ reconnecting…'} · {new Date(st.time_ms).toLocaleTimeString()}
        </p>
      </header>
      <main>
        <p role="status" aria-live="polite" class={`notice ${notice === null ? '' : notice.ok ? 'ok' : 'bad'}`} data-testid="notice">
          {notice?.text ?? ''}
        </p>
        <HealthBar state={st} />
        {st.pools.map((p) => (
          <section key={p.name} class="pool" aria-labelledby={`pool-${p.name}`}>
            <h2 id={`pool-${p.name}`}>
              Pool {p.name} <span class="muted small">chunks of {bytes(p.chunk_size)}</span>
            </h2>
            <div class="members">
              {p.members.map((m) => (
                <MemberCard key={m.member_id} m={m} picture={s.pictures.get(`${p.name}/${m.member_id}`)} dark={dark} ask={setPending} />
              ))}
            </div>
            <VerifyPanel pool={p} ask={setPending} />
          </section>
        ))}
        <section class="devices" aria-labelledby="devices-title">
          <h2 id="devices-title">Devices</h2>
          <div class="scroll">
            <table>
              <thead>
                <tr>
                  <th>device</th>
                  <th>pool</th>
                  <th>node</th>
                  <th>state</th>
                  <th>NBD URIs</th>
                </tr>
              </thead>
              <tbody>
                {st.devices.map((d) => (
                  <tr key={d.name} data-testid={`device-${d.name}`} data-state={d.state} data-degraded={String(d.degraded)}>
                    <td>{d.name}</td>
                    <td>{d.pool}</td>
                    <td>{d.node}</td>
                    <td>
                      <Badge health={d.health} text={`${d.state}${d.degraded ? ' (degraded)' : ''}`} />
                    </td>
                    <td>
                      {d.uris.map((u) => (
                        <code key={u} class="uri">
                          {u}
                        </code>
                      ))}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
        <section class="charts" aria-labelledby="io-title">
          <h2 id="io-title">Client IO</h2>
          <div class="grid">
            {io.map((c) => (
              <Chart key={c.id} chart={c} version={s.version} dark={dark} />
            ))}
          </div>
          <h2>Resync</h2>
          <div class="grid">
            {sync.map((c) => (
              <Chart key={c.id} chart={c} version={s.version} dark={dark} />
            ))}
          </div>
        </section>
        <Events events={s.events} />
      </main>
      <ConfirmDialog pending={pending} onDone={done} />
    </>
  );
}

const root = document.getElementById('app');
if (root !== null) {
  root.textContent = '';
  render(<App />, root);
}
