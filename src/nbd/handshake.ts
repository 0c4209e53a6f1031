// The option phase of the fixed-newstyle handshake: one client option in, the replies and
// what the connection does next out. Pure: no stream, no device IO (only the export table
// and each device's static properties), so every option can be tested on bytes alone.
//
//   option              outcome
//   EXPORT_NAME         known export: transmit (reply: size, flags[, zeroes]); else close
//   ABORT               ACK, close
//   LIST                SERVER per export, ACK           (data must be empty)
//   INFO                INFO replies, ACK                 (unknown export: ERR_UNKNOWN)
//   GO                  INFO replies, ACK, transmit       (unknown export: ERR_UNKNOWN)
//   STRUCTURED_REPLY    ACK                               (data must be empty)
//   LIST_META_CONTEXT   META_CONTEXT per match, ACK
//   SET_META_CONTEXT    META_CONTEXT per selection, ACK  (needs STRUCTURED_REPLY first)
//   STARTTLS            tls off: ERR_UNSUP; else ACK, then the TLS handshake (outcome
//                       'starttls'); once TLS is up: ERR_INVALID (the spec's answer)
//   others              ERR_UNSUP, keep parsing
// With tls 'require' (the spec's FORCEDTLS) every option before TLS but STARTTLS and ABORT
// gets ERR_TLS_REQD, and EXPORT_NAME (which cannot carry an error) closes the connection:
// nothing about the exports leaks and no transmission starts in clear.
// Malformed data gets ERR_INVALID and the negotiation continues.

import {
  Info,
  MAX_STRING_BYTES,
  Opt,
  Rep,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
} from './proto.js';
import { type ExportTable, type NbdExport, contextsOf, matchContexts, transmissionFlags } from './export-info.js';

/**
 * off: no TLS (STARTTLS gets ERR_UNSUP); on: TLS at the client's choice (SELECTIVETLS with no
 * TLS-only export); require: TLS before anything else (FORCEDTLS, no downgrade).
 */
export type TlsMode = 'off' | 'on' | 'require';

export interface MetaSelection {
  readonly id: number;
  readonly name: string;
}

/** What the negotiation has settled so far; the transmission phase inherits it. */
export interface Negotiated {
  structured: boolean;
  no_zeroes: boolean;
  /** The export SET_META_CONTEXT was for; a GO to another export drops the selection. */
  meta_export: string | null;
  meta: MetaSelection[];
  /** TLS is up on this connection (STARTTLS done). */
  tls: boolean;
}

export type OptionOutcome =
  | { kind: 'continue'; replies: Buffer[] }
  /** Send the replies (the ACK), then run the TLS handshake; no byte may follow in clear. */
  | { kind: 'starttls'; replies: Buffer[] }
  | { kind: 'close'; replies: Buffer[]; reason: string }
  | { kind: 'transmit'; replies: Buffer[]; export: NbdExport };

export function newNegotiated(no_zeroes: boolean, tls = false): Negotiated {
  return { structured: false, no_zeroes, meta_export: null, meta: [], tls };
}

const cont = (replies: Buffer[]): OptionOutcome => ({ kind: 'continue', replies });
const invalid = (opt: number, msg: string): OptionOutcome => cont(encodeOptionError(opt, Rep.ERR_INVALID, msg));

export function handleOption(st: Negotiated, table: ExportTable, opt: number, data: Buffer, tls: TlsMode = 'off'): OptionOutcome {
  if (tls === 'require' && !st.tls && opt !== Opt.STARTTLS && opt !== Opt.ABORT) {
    if (opt === Opt.EXPORT_NAME) return { kind: 'close', replies: [], reason: 'EXPORT_NAME before STARTTLS while TLS is required' };
    return cont(encodeOptionError(opt, Rep.ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first'));
  }
  switch (opt) {
    case Opt.EXPORT_NAME: {
      const name = data.toString('utf8');
      const exp = data.length <= MAX_STRING_BYTES ? table.find(name) : undefined;
      if (exp === undefined) return { kind: 'close', replies: [], reason: `EXPORT_NAME of unknown export "${name.slice(0, 64)}"` };
      if (st.meta_export !== exp.name) st.meta = [];
      const flags = transmissionFlags(exp.device, st.structured);
      return { kind: 'transmit', replies: [encodeExportNameReply(exp.device.size_bytes, flags, st.no_zeroes)], export: exp };
    }
    case Opt.ABORT:
      return { kind: 'close', replies: encodeOptionReply(opt, Rep.ACK, null), reason: 'client sent ABORT' };
    case Opt.LIST: {
      if (data.length !== 0) return invalid(opt, 'LIST takes no data');
      const out: Buffer[] = [];
      for (const e of table.all()) out.push(...encodeOptionReply(opt, Rep.SERVER, encodeRepServer(e.name, e.description)));
      out.push(...encodeOptionReply(opt, Rep.ACK, null));
      return cont(out);
    }
    case Opt.INFO:
    case Opt.GO:
      return infoOrGo(st, table, opt, data);
    case Opt.STRUCTURED_REPLY:
      if (data.length !== 0) return invalid(opt, 'STRUCTURED_REPLY takes no data');
      st.structured = true;
      return cont(encodeOptionReply(opt, Rep.ACK, null));
    case Opt.LIST_META_CONTEXT:
    case Opt.SET_META_CONTEXT:
      return metaContext(st, table, opt, data);
    case Opt.STARTTLS:
      if (tls === 'off') return cont(encodeOptionError(opt, Rep.ERR_UNSUP, 'TLS is not enabled on this server'));
      if (st.tls) return invalid(opt, 'TLS is already active');
      if (data.length !== 0) return invalid(opt, 'STARTTLS takes no data');
      return { kind: 'starttls', replies: encodeOptionReply(opt, Rep.ACK, null) };
    default:
      return cont(encodeOptionError(opt, Rep.ERR_UNSUP, `option ${opt} not supported`));
  }
}

/**
 * INFO/GO data:
 *   u32 name length, name, u16 number of info requests, u16 info type each
 */
function infoOrGo(st: Negotiated, table: ExportTable, opt: number, data: Buffer): OptionOutcome {
  if (data.length < 6) return invalid(opt, 'option data too short');
  const name_len = data.readUInt32BE(0);
  if (name_len > data.length - 6 || name_len > MAX_STRING_BYTES) return invalid(opt, 'export name length out of bounds');
  const name = data.toString('utf8', 4, 4 + name_len);
  const n_req = data.readUInt16BE(4 + name_len);
  if (data.length !== 6 + name_len + 2 * n_req) return invalid(opt, 'info request count does not match the option length');
  const requested = new Set<number>();
  for (let i = 0; i < n_req; i++) requested.add(data.readUInt16BE(6 + name_len + 2 * i));

  const exp = table.find(name);
  if (exp === undefined) return cont(encodeOptionError(opt, Rep.ERR_UNKNOWN, `no export named "${name.slice(0, 64)}"`));
  const dev = exp.device;
  const out: Buffer[] = [];
  const info = (b: Buffer): void => void out.push(...encodeOptionReply(opt, Rep.INFO, b));
  info(encodeInfoExport(dev.size_bytes, transmissionFlags(dev, st.structured)));
  if (requested.has(Info.NAME)) info(encodeInfoString(Info.NAME, exp.name));
  if (requested.has(Info.DESCRIPTION) && exp.description !== '') info(encodeInfoString(Info.DESCRIPTION, exp.description));
  // Sent even when not asked for (the spec allows it): clients that ignore it still work,
  // clients that honour it avoid read-modify-write on the device and never send more than
  // the maximum (the server splits what the device cannot take at once).
  info(encodeInfoBlockSize(dev.block_sizes.minimum, dev.block_sizes.preferred, exp.max_payload));
  out.push(...encodeOptionReply(opt, Rep.ACK, null));
  if (opt === Opt.INFO) return cont(out);
  if (st.meta_export !== exp.name) st.meta = [];
  return { kind: 'transmit', replies: out, export: exp };
}

/**
 * LIST/SET_META_CONTEXT data:
 *   u32 export name length, name, u32 number of queries, then per query: u32 length, query
 */
function metaContext(st: Negotiated, table: ExportTable, opt: number, data: Buffer): OptionOutcome {
  const set = opt === Opt.SET_META_CONTEXT;
  if (set && !st.structured) return invalid(opt, 'SET_META_CONTEXT needs STRUCTURED_REPLY first');
  if (data.length < 8) return invalid(opt, 'option data too short');
  const name_len = data.readUInt32BE(0);
  if (name_len > data.length - 8 || name_len > MAX_STRING_BYTES) return invalid(opt, 'export name length out of bounds');
  const name = data.toString('utf8', 4, 4 + name_len);
  let at = 4 + name_len;
  const n_queries = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  // The count is the client's word; each query takes at least 4 bytes of the bounded data.
  for (let i = 0; i < n_queries; i++) {
    if (data.length - at < 4) return invalid(opt, 'query count exceeds the option data');
    const q_len = data.readUInt32BE(at);
    at += 4;
    if (q_len > data.length - at || q_len > MAX_STRING_BYTES) return invalid(opt, 'query length out of bounds');
    queries.push(data.toString('utf8', at, at + q_len));
    at += q_len;
  }
  if (at !== data.length) return invalid(opt, 'trailing bytes after the queries');

  const exp = table.find(name);
  if (exp === undefined) return cont(encodeOptionError(opt, Rep.ERR_UNKNOWN, `no export named "${name.slice(0, 64)}"`));
  const available = contextsOf(exp.device);
  const chosen: string[] = [];
  if (!set && queries.length === 0) chosen.push(...available);
  for (const q of queries) for (const c of matchContexts(available, q, !set)) if (!chosen.includes(c)) chosen.push(c);

  const out: Buffer[] = [];
  const selection: MetaSelection[] = [];
  for (const c of chosen) {
    const id = available.indexOf(c) + 1;
    selection.push({ id, name: c });
    out.push(...encodeOptionReply(opt, Rep.META_CONTEXT, encodeRepMetaContext(set ? id : 0, c)));
  }
  out.push(...encodeOptionReply(opt, Rep.ACK, null));
  if (set) {
    st.meta = selection;
    st.meta_export = exp.name;
  }
  return cont(out);
}
