// Telling a next hop who the original client was: Postfix's XCLIENT and XFORWARD extensions,
// shared by the queue's client (smtp-client.ts) and the in-line proxy's (proxy/backend-client.ts).
//
//   XCLIENT   (XCLIENT_README) the session becomes the original client's: the server answers
//             220, the client greets again, and the server's access rules, logs and Received
//             line see NAME, ADDR, PORT, HELO, LOGIN and PROTO. The attributes last for the
//             whole connection, so a connection reused for another client's message must send
//             them all again before MAIL (absent ones as [UNAVAILABLE]).
//   XFORWARD  (XFORWARD_README) logging only: NAME, ADDR, PORT, PROTO, HELO, IDENT and SOURCE
//             for the next transaction; the server answers 250 and nothing else changes.
//
// Mail a trusted peer handed us with XFORWARD naming its original client (a content filter's,
// src/pipeline/origin.ts) has two clients, and each command gets the one it means, as Postfix's
// smtpd_proxy does (state->addr for XCLIENT, FORWARD_ADDR() for XFORWARD): XCLIENT hands the next
// hop our session's standing, which is the peer's, so its ADDR, NAME and HELO are the peer's;
// XFORWARD is for the next hop's log, so it names the original client (`origin`), with its
// IDENT and SOURCE when given.
//
// Both offer their attribute names in the EHLO reply ("250-XCLIENT NAME ADDR PORT PROTO HELO"),
// only the offered ones are sent. Values are xtext (RFC 3461 §4); an IPv6 address carries the
// "IPV6:" prefix; a command stays within 512 octets (RFC 5321 §4.5.3.1.4), so long values are
// spread over several commands, ADDR in the last one (smtp-server stops taking XCLIENT once ADDR
// is set).
//
// Config keys: `routes.<domain>.forward_client` (the caller passes the mode).
import { isIP } from 'node:net';
import type { Envelope } from '../queue/envelope.js';
import { namesClient, type ForwardedClientInfo } from '../pipeline/origin.js';

/** `routes.<d>.forward_client`: which command carries the client, when the next hop offers it. */
export type ForwardClientMode = 'none' | 'xclient' | 'xforward' | 'auto';

export const FORWARD_CLIENT_MODES: readonly ForwardClientMode[] = ['none', 'xclient', 'xforward', 'auto'];

/** A route's mode, with the default of its kind (proxy: xclient, queue: none). */
export function routeForwardMode(route: { mode: 'queue' | 'proxy'; forward_client?: ForwardClientMode | undefined }): ForwardClientMode {
  return route.forward_client ?? (route.mode === 'proxy' ? 'xclient' : 'none');
}

/** The client a message came from, as the next hop should see it. */
export interface ForwardedClient {
  /** The client's IP address (absent: [UNAVAILABLE]). */
  addr?: string;
  port?: number;
  /** Its verified host name (absent: [UNAVAILABLE]). */
  name?: string;
  helo?: string;
  /** The SASL login it authenticated as. */
  login?: string;
  proto: 'SMTP' | 'ESMTP';
  /** XFORWARD SOURCE: LOCAL for mail submitted on this host, REMOTE otherwise. */
  source: 'LOCAL' | 'REMOTE';
  /** XFORWARD IDENT: our queue id, so the next hop's log line can be matched with ours. */
  ident?: string;
  /**
   * The original client XFORWARD named for this message (the fields above are then the peer's
   * that sent it): XFORWARD sends it instead; XCLIENT never does (see the header).
   */
  origin?: ForwardedClientInfo;
}

/**
 * The XCLIENT identity of a client: everything XCLIENT sends but the port, which differs per
 * connection of one client. A connection speaking for one identity may carry its next message
 * without a new XCLIENT.
 */
export function clientIdentity(c: ForwardedClient): string {
  return JSON.stringify([c.addr ?? '', c.name ?? '', c.helo ?? '', c.login ?? '', c.proto]);
}

/** What the envelope keeps about its client (queue/envelope.ts `source`) that is sent on. */
export type EnvelopeSourceLike = Pick<Envelope['source'], 'remoteAddress' | 'remotePort' | 'clientHostname' | 'helo' | 'authUser' | 'protocol' | 'forwarded'> & { listener: string };

const UNAVAILABLE = '[UNAVAILABLE]';
const MAX_COMMAND = 512 - 2; // RFC 5321 §4.5.3.1.4: 512 octets with the CRLF
const MAX_VALUE = 255; // XCLIENT_README note 1: NAME and HELO values are at most 255 characters

/** xtext (RFC 3461 §4): "+", "=" and anything outside 33-126 as +XX. */
export function xtext(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => (b < 33 || b > 126 || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b))).join('');
}

/** The ADDR value: IPv4 as it is (also when IPv4-mapped), IPv6 with the IPV6: prefix. */
export function addrValue(ip: string | undefined): string {
  if (!ip) return UNAVAILABLE;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  const v = isIP(ip);
  if (v === 4) return ip;
  if (v === 6) return `IPV6:${ip}`;
  return UNAVAILABLE;
}

/** The client of a spooled message (`envelope.source`); `qid` is our queue id. */
export function clientFromSource(source: EnvelopeSourceLike, qid?: string): ForwardedClient {
  const local = source.listener === 'local';
  return {
    ...(local ? {} : { addr: source.remoteAddress }),
    ...(source.remotePort ? { port: source.remotePort } : {}),
    ...(source.clientHostname ? { name: source.clientHostname } : {}),
    ...(source.helo ? { helo: source.helo } : {}),
    ...(source.authUser ? { login: source.authUser } : {}),
    // Received's `with` keyword: ESMTP, ESMTPS, ESMTPSA, LMTP … all but plain SMTP mean EHLO.
    proto: /^SMTP/i.test(source.protocol) ? 'SMTP' : 'ESMTP',
    source: local ? 'LOCAL' : 'REMOTE',
    ...(qid ? { ident: qid } : {}),
    ...(source.forwarded ? { origin: source.forwarded } : {}),
  };
}

/**
 * What XFORWARD says about `client`: the original client when XFORWARD named one to us (unknown
 * attributes stay unknown, never the peer's), else `client` itself; its IDENT and SOURCE when
 * given, else ours.
 */
function xforwardClient(client: ForwardedClient): { addr?: string; port?: number; name?: string; helo?: string; proto?: string; source: string; ident?: string } {
  const o = client.origin;
  const ident = o?.ident ?? client.ident;
  const source = o?.source === 'LOCAL' || o?.source === 'REMOTE' ? o.source : client.source;
  const who = namesClient(o) ? { addr: o.address, port: o.port, name: o.hostname, helo: o.helo, proto: o.protocol } : { addr: client.addr, port: client.port, name: client.name, helo: client.helo, proto: client.proto };
  return { ...who, source, ...(ident !== undefined ? { ident } : {}) };
}

/** The attribute names a server offers for `keyword` ("XCLIENT NAME ADDR …"), or null when it offers none. */
export function offeredAttributes(ehloParams: string | undefined): Set<string> | null {
  if (ehloParams === undefined) return null;
  return new Set(ehloParams.toUpperCase().split(/\s+/).filter(Boolean));
}

/** Which command to use with `mode`, given what the server offers (EHLO keyword → parameters). */
export function chooseCommand(mode: ForwardClientMode, offered: { xclient?: string | undefined; xforward?: string | undefined }): 'XCLIENT' | 'XFORWARD' | null {
  const x = offered.xclient !== undefined;
  const f = offered.xforward !== undefined;
  if (mode === 'xclient') return x ? 'XCLIENT' : null;
  if (mode === 'xforward') return f ? 'XFORWARD' : null;
  if (mode === 'auto') return x ? 'XCLIENT' : f ? 'XFORWARD' : null;
  return null;
}

function clip(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s.slice(0, MAX_VALUE);
}

/**
 * The XCLIENT or XFORWARD command lines for `client`, with every offered attribute we know of
 * (absent values as [UNAVAILABLE], so nothing from an earlier client on this connection stays).
 * Empty when the server offers none of them.
 */
export function forwardCommands(command: 'XCLIENT' | 'XFORWARD', offered: Set<string>, client: ForwardedClient): string[] {
  const value = (v: string | undefined) => {
    const x = v === undefined ? UNAVAILABLE : xtext(v);
    // An encoded value that could not fit in one command is better sent as unknown.
    return x.length > MAX_COMMAND - command.length - 16 ? UNAVAILABLE : x;
  };
  // HELO and NAME may be long, ADDR goes last (see the header).
  const fwd = command === 'XFORWARD' ? xforwardClient(client) : null;
  const attrs: [string, string][] = !fwd
    ? [
        ['NAME', value(clip(client.name))],
        ['HELO', value(clip(client.helo))],
        ['LOGIN', value(clip(client.login))],
        ['PORT', client.port ? String(client.port) : UNAVAILABLE],
        ['PROTO', client.proto],
        ['ADDR', addrValue(client.addr)],
      ]
    : [
        ['NAME', value(clip(fwd.name))],
        ['HELO', value(clip(fwd.helo))],
        ['IDENT', value(clip(fwd.ident))],
        ['SOURCE', fwd.source],
        ['PORT', fwd.port ? String(fwd.port) : UNAVAILABLE],
        ['PROTO', value(clip(fwd.proto))],
        ['ADDR', addrValue(fwd.addr)],
      ];
  const lines: string[] = [];
  let line = command;
  for (const [k, v] of attrs) {
    if (!offered.has(k)) continue;
    const part = ` ${k}=${v}`;
    if (line.length + part.length > MAX_COMMAND && line !== command) {
      lines.push(line);
      line = command;
    }
    line += part;
  }
  if (line !== command) lines.push(line);
  return lines;
}
