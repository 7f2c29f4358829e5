// Where a message came from, as against who is sending it. XFORWARD (Postfix XFORWARD_README)
// lets a trusted peer, typically a content filter handing mail back, name the original client of
// one mail transaction. That client describes the message (Received, logs, what a spam scanner,
// SPF or a Sieve rule is told about its origin); the peer, whose connection it is, keeps every
// policy decision: relaying, access lists, DNSBL, greylisting, rate limits, AUTH throttling.
//
// So a session carries both: `remoteAddress`, `remotePort`, `clientHostname` and `helo` are the
// connection's client (the peer, or the client XCLIENT handed the session to), and `forwarded`
// the client XFORWARD named, while its transaction lasts. `originClient()` is the one place that
// picks between them; policy code reads the session's own fields and never this.
//
// As in Postfix (smtpd's FORWARD_ADDR and friends), once XFORWARD names any attribute of the
// client (ADDR, NAME, PORT, HELO, PROTO) the origin is that client as a whole: an attribute it
// left out or gave as [UNAVAILABLE] is unknown, never filled in from the peer, whose HELO or name
// is not the client's. IDENT and SOURCE alone name no client.

/** What an XFORWARD said about the client of the current transaction; absent attributes are unknown. */
export interface ForwardedClientInfo {
  /** ADDR, as smtp-server leaves it: without the IPV6: prefix, IPv6 in its normal form. */
  address?: string;
  /** PORT. */
  port?: number;
  /** NAME: the client's verified host name, lower case. */
  hostname?: string;
  /** HELO: the name the client greeted with, lower case. */
  helo?: string;
  /** PROTO: SMTP or ESMTP, as given. */
  protocol?: string;
  /** SOURCE: LOCAL (submitted on the peer's host) or REMOTE. */
  source?: string;
  /** IDENT: the message's queue id where it first arrived. */
  ident?: string;
}

/** The client a message came from. */
export interface OriginClient {
  /** Unknown only when XFORWARD named the client without its address. */
  address?: string;
  port?: number;
  hostname?: string;
  helo?: string;
}

/** A session (plugin.ts SessionInfo) or an envelope's `source` (queue/envelope.ts). */
export interface OriginFacts {
  remoteAddress: string;
  remotePort?: number;
  clientHostname?: string;
  helo?: string;
  forwarded?: ForwardedClientInfo;
}

/** True when XFORWARD named the client itself, not only IDENT or SOURCE. */
export function namesClient(f: ForwardedClientInfo | undefined): f is ForwardedClientInfo {
  return !!f && (f.address !== undefined || f.port !== undefined || f.hostname !== undefined || f.helo !== undefined || f.protocol !== undefined);
}

/** The client `facts` describe the message as coming from: XFORWARD's when it named one, else the connection's. */
export function originClient(facts: OriginFacts): OriginClient {
  const f = facts.forwarded;
  if (namesClient(f)) {
    return {
      ...(f.address !== undefined ? { address: f.address } : {}),
      ...(f.port !== undefined ? { port: f.port } : {}),
      ...(f.hostname !== undefined ? { hostname: f.hostname } : {}),
      ...(f.helo !== undefined ? { helo: f.helo } : {}),
    };
  }
  return {
    address: facts.remoteAddress,
    ...(facts.remotePort ? { port: facts.remotePort } : {}),
    ...(facts.clientHostname ? { hostname: facts.clientHostname } : {}),
    ...(facts.helo ? { helo: facts.helo } : {}),
  };
}

/**
 * smtp-server's XFORWARD attributes (its `_xForward` map: [UNAVAILABLE] as false, ADDR checked
 * and normalised, NAME checked as a host name, PORT a number or 0, HELO lower case) as ours.
 */
export function forwardedFromAttributes(attrs: ReadonlyMap<string, unknown>): ForwardedClientInfo {
  const text = (key: string): string | undefined => {
    const v = attrs.get(key);
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const address = text('ADDR');
  const port = attrs.get('PORT');
  const hostname = text('NAME')?.toLowerCase().replace(/\.$/, '');
  const helo = text('HELO')?.toLowerCase();
  const protocol = text('PROTO');
  const source = text('SOURCE')?.toUpperCase();
  const ident = text('IDENT');
  return {
    ...(address ? { address } : {}),
    ...(typeof port === 'number' && port > 0 && port < 65536 ? { port } : {}),
    ...(hostname ? { hostname } : {}),
    ...(helo ? { helo } : {}),
    ...(protocol ? { protocol } : {}),
    ...(source ? { source } : {}),
    ...(ident ? { ident } : {}),
  };
}
