// A listener that trusts one loopback peer for XCLIENT and XFORWARD, with real plugins: for the
// tests of what those commands change (xclient-admission, xforward-policy).
import { openSmtp, type SmtpTranscript } from './smtp-client.js';
import { startHarness, type Harness } from './fakes.js';
import { silentLogger } from '../../src/log/logger.js';
import { loadPipeline } from '../../src/pipeline/loader.js';
import { fakeDirectory, unconfiguredResolver } from '../../src/pipeline/harness.js';
import type { Resolver } from '../../src/dns/resolver.js';
import type { Config } from '../../src/config/load.js';
import type { Store } from '../../src/store/store.js';

/** The trusted peer (a proxy or a content filter), in no relay network. */
export const TRUSTED_PEER = '127.0.0.2';
export const XCLIENT_TRUSTED = { host: '127.0.0.1', port: 0, xclient: { trusted: [`${TRUSTED_PEER}/32`] } };

/** An smtp listener trusting TRUSTED_PEER, with the real plugins of `plugins` on `store`. */
export function withPlugins(plugins: unknown[], opts: { store: Store; dns?: Resolver; config?: Record<string, unknown> }): Promise<Harness> {
  const chain = (config: Config) =>
    loadPipeline(config, {
      store: opts.store,
      directory: fakeDirectory({ localDomains: ['example.test'], users: { 'alice@example.test': 'secret' } }),
      dns: opts.dns ?? unconfiguredResolver(),
      log: silentLogger(),
    });
  return startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED }, plugins, ...opts.config }, chain });
}

/** A connection from `localAddress`, greeted and past its EHLO. */
export async function greeted(port: number, localAddress: string, name: string): Promise<SmtpTranscript> {
  const s = await openSmtp(port, { localAddress });
  await s.expect('220 ');
  await s.cmd(`EHLO ${name}`, '250');
  return s;
}
