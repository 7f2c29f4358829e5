// RFC 5230 vacation and RFC 6131 vacation-seconds: the action as data (period in seconds,
// clamped to sieve.vacation.min_period; default sieve.vacation.default_period). Whether a reply
// is actually sent is the delivery side's decision (RFC 3834 and RFC 5230 §4.5-§4.6), using
// `shouldSuppressVacation` below and its per-sender memory.
import type { Envelope } from '../registry.js';
import type { ExtensionDef } from '../registry.js';
import { headersNamed, headerValue, parseAddressList, splitMessage, unfold, type HeaderField } from '../message.js';
import { isValidRedirect } from './core.js';

const vacation: ExtensionDef = {
  capabilities: ['vacation', 'vacation-seconds'],
  register(reg) {
    reg.add({
      name: 'vacation',
      kind: 'command',
      extension: 'vacation',
      tags: [
        { name: 'days', arg: 'number', group: 'period' },
        { name: 'seconds', arg: 'number', group: 'period', extension: 'vacation-seconds' },
        { name: 'subject', arg: 'string' },
        { name: 'from', arg: 'string' },
        { name: 'addresses', arg: 'stringlist' },
        { name: 'mime' },
        { name: 'handle', arg: 'string' },
      ],
      positional: [{ name: 'reason', kind: 'string' }],
      check(n, v) {
        const from = n.tags.get('from')?.value;
        if (from?.kind === 'string' && !from.value.includes('${') && !isValidRedirect(from.value)) {
          v.report(`vacation: invalid :from address "${from.value}"`, from.location);
        }
      },
      run(n, rt) {
        const minS = Math.floor(rt.config.vacation.min_period / 1000);
        const days = n.tags.get('days')?.value;
        const secs = n.tags.get('seconds')?.value;
        let seconds = Math.floor(rt.config.vacation.default_period / 1000);
        if (days?.kind === 'number') seconds = days.value * 86400;
        if (secs?.kind === 'number') seconds = secs.value;
        seconds = Math.max(seconds, minS);
        const subject = rt.tagStr(n, 'subject');
        const from = rt.tagStr(n, 'from');
        const handle = rt.tagStr(n, 'handle');
        const addrTag = n.tags.get('addresses')?.value;
        rt.actions.add(
          {
            type: 'vacation',
            seconds,
            ...(subject !== undefined ? { subject } : {}),
            ...(from !== undefined ? { from } : {}),
            ...(handle !== undefined ? { handle } : {}),
            reason: rt.str(n.args[0]),
            addresses: addrTag ? rt.list(addrTag) : [],
            mime: n.tags.has('mime'),
          },
          n.location,
        );
      },
    });
  },
};
export default vacation;

export type VacationSuppression =
  | 'null-sender'
  | 'system-sender'
  | 'auto-submitted'
  | 'list'
  | 'bulk'
  | 'not-addressed'
  | 'own-address';

/**
 * RFC 3834 §2 and RFC 5230 §4.5-§4.6: when a vacation reply must not be sent. Returns the reason,
 * or null when a reply is allowed. The once-per-period memory is the caller's (keyed by sender
 * and handle). `userAddresses` are the user's own addresses plus the action's :addresses.
 */
export function shouldSuppressVacation(message: Buffer | string | HeaderField[], envelope: Envelope, userAddresses: string[]): VacationSuppression | null {
  const headers = Array.isArray(message) ? message : splitMessage(typeof message === 'string' ? Buffer.from(message) : message).headers;
  const sender = envelope.from.replace(/^<|>$/g, '').toLowerCase();
  if (sender === '') return 'null-sender';
  const local = sender.slice(0, sender.lastIndexOf('@'));
  if (/^(mailer-daemon|postmaster|listserv|majordomo|owner-.*|.*-request|.*-owner|bounce.*|no-?reply)$/.test(local)) return 'system-sender';
  const first = (name: string) => {
    const f = headersNamed(headers, name)[0];
    return f ? unfold(f.raw) : undefined;
  };
  const auto = first('auto-submitted');
  if (auto !== undefined && auto.toLowerCase().split(';')[0]!.trim() !== 'no') return 'auto-submitted';
  if (['list-id', 'list-unsubscribe', 'list-post', 'list-help', 'list-owner', 'list-subscribe', 'list-archive'].some((h) => first(h) !== undefined)) return 'list';
  const prec = first('precedence')?.toLowerCase();
  if (prec === 'bulk' || prec === 'list' || prec === 'junk') return 'bulk';
  if (first('x-auto-response-suppress') !== undefined && /\b(all|oof|autoreply)\b/i.test(first('x-auto-response-suppress')!)) return 'auto-submitted';
  const mine = userAddresses.map((a) => a.toLowerCase());
  if (mine.includes(sender)) return 'own-address';
  const recipients = ['to', 'cc', 'bcc', 'resent-to', 'resent-cc', 'resent-bcc']
    .flatMap((h) => headersNamed(headers, h))
    .flatMap((f) => parseAddressList(headerValue(f)))
    .map((a) => a.address.toLowerCase());
  if (!recipients.some((r) => mine.includes(r))) return 'not-addressed';
  return null;
}
