// STARTTLS policy for outbound connections (RFC 3207), as `outbound.tls` or a route's URL says:
//   none           never STARTTLS (RFC 3207 §4: a client MAY skip it)
//   opportunistic  STARTTLS when offered, any certificate; if the TLS handshake itself fails the
//                  delivery is retried once in clear on a new connection (RFC 7435 §3, as
//                  Postfix's "may" level does)
//   required       STARTTLS must succeed (any certificate), else the attempt fails temporarily
//   verify         STARTTLS must succeed with a certificate valid for the host name (the MX
//                  name, or the route's host), else the attempt fails temporarily
// A route may set its own level with `?tls=none|opportunistic|required|verify`; `smtps://` is
// implicit TLS (RFC 8314 §3.3) and then checks the certificate only under `verify`.
//
// Config keys: `outbound.tls`.
import type { ConnectionOptions } from 'node:tls';
import { isIP } from 'node:net';

export type TlsPolicy = 'none' | 'opportunistic' | 'required' | 'verify';

export const TLS_POLICIES: readonly TlsPolicy[] = ['none', 'opportunistic', 'required', 'verify'];

export interface TlsConnectionOptions {
  ignoreTLS: boolean;
  requireTLS: boolean;
  opportunisticTLS: boolean;
  tls: ConnectionOptions;
}

/** nodemailer SMTPConnection options for a policy; `servername` is the name to verify (SNI). */
export function tlsOptions(policy: TlsPolicy, servername: string): TlsConnectionOptions {
  const tls: ConnectionOptions = { rejectUnauthorized: policy === 'verify', minVersion: 'TLSv1.2' };
  // SNI takes a host name only (RFC 6066 §3).
  if (servername && !isIP(servername)) tls.servername = servername;
  return {
    ignoreTLS: policy === 'none',
    requireTLS: policy === 'required' || policy === 'verify',
    opportunisticTLS: policy === 'opportunistic',
    tls,
  };
}
