// RFC 5260 date and index. `date [:zone <+hhmm> | :originalzone] [COMPARATOR] [MATCH-TYPE]
// <header-name> <date-part> <key-list>` and `currentdate [:zone] … <date-part> <key-list>`.
// Without :zone the local time zone of the process (TZ) is used (§4.1). Date parts (§4.2):
// year month day date julian hour minute second time iso8601 std11 zone weekday. index (§6)
// adds :index <n> [:last] to header, address and date.
import { comparatorTag, matchTags, type CNode, type ExtensionDef, type ValidateCtx } from '../registry.js';
import { headerValue } from '../message.js';
import { selectFields } from './core.js';

export const DATE_PARTS = ['year', 'month', 'day', 'date', 'julian', 'hour', 'minute', 'second', 'time', 'iso8601', 'std11', 'zone', 'weekday'];
const ZONE = /^[+-](?:[01][0-9]|2[0-3])[0-5][0-9]$/;
const NAMED_ZONES: Record<string, number> = { UT: 0, UTC: 0, GMT: 0, Z: 0, EST: -300, EDT: -240, CST: -360, CDT: -300, MST: -420, MDT: -360, PST: -480, PDT: -420 };
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function zoneMinutes(z: string): number {
  const sign = z[0] === '-' ? -1 : 1;
  return sign * (Number(z.slice(1, 3)) * 60 + Number(z.slice(3, 5)));
}

function zoneString(min: number): string {
  const a = Math.abs(min);
  return (min < 0 ? '-' : '+') + String(Math.floor(a / 60)).padStart(2, '0') + String(a % 60).padStart(2, '0');
}

/** Parses an RFC 5322 §3.3 date-time; returns the instant and the zone it was written in. */
export function parseDateTime(s: string): { ms: number; zone: number } | null {
  const v = s.replace(/\([^)]*\)/g, ' ').trim();
  const m = /^(?:[A-Za-z]{3},?\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{2,4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-]\d{4}|[A-Za-z]{1,5})?/.exec(v);
  if (!m) return null;
  const month = MONTHS.findIndex((x) => x.toLowerCase() === m[2]!.toLowerCase());
  if (month < 0) return null;
  let year = Number(m[3]);
  if (m[3]!.length === 2) year += year < 50 ? 2000 : 1900; // RFC 5322 §4.3
  else if (m[3]!.length === 3) year += 1900;
  const zs = m[7] ?? '+0000';
  const zone = ZONE.test(zs) || /^[+-]\d{4}$/.test(zs) ? zoneMinutes(zs) : (NAMED_ZONES[zs.toUpperCase()] ?? 0);
  const [h, mi, sec] = [Number(m[4]), Number(m[5]), Number(m[6] ?? 0)];
  if (h > 23 || mi > 59 || sec > 60) return null;
  const utc = Date.UTC(year, month, Number(m[1]), h, mi, sec) - zone * 60000;
  return Number.isNaN(utc) ? null : { ms: utc, zone };
}

/** One date part (RFC 5260 §4.2) of an instant shown in a zone (minutes east of UTC). */
export function datePart(ms: number, zone: number, part: string): string {
  const d = new Date(ms + zone * 60000);
  const p2 = (n: number) => String(n).padStart(2, '0');
  const year = String(d.getUTCFullYear()).padStart(4, '0');
  const month = p2(d.getUTCMonth() + 1);
  const day = p2(d.getUTCDate());
  const time = `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  switch (part) {
    case 'year':
      return year;
    case 'month':
      return month;
    case 'day':
      return day;
    case 'date':
      return `${year}-${month}-${day}`;
    case 'julian':
      // Modified Julian Day: days since 1858-11-17 (§4.2).
      return String(Math.floor((ms + zone * 60000) / 86400000) + 40587);
    case 'hour':
      return p2(d.getUTCHours());
    case 'minute':
      return p2(d.getUTCMinutes());
    case 'second':
      return p2(d.getUTCSeconds());
    case 'time':
      return time;
    case 'iso8601': {
      const z = zoneString(zone);
      return `${year}-${month}-${day}T${time}${z.slice(0, 3)}:${z.slice(3)}`;
    }
    case 'std11':
      return `${DAYS[d.getUTCDay()]}, ${day} ${MONTHS[d.getUTCMonth()]} ${year} ${time} ${zoneString(zone)}`;
    case 'zone':
      return zoneString(zone);
    case 'weekday':
      return String(d.getUTCDay());
    default:
      return '';
  }
}

function checkDate(partIndex: number) {
  return (n: CNode, v: ValidateCtx) => {
    const z = n.tags.get('zone')?.value;
    if (z?.kind === 'string' && !z.value.includes('${') && !ZONE.test(z.value)) v.report(`invalid time zone "${z.value}" (expected +hhmm or -hhmm)`, z.location);
    const p = n.args[partIndex];
    if (p?.kind === 'string' && !p.value.includes('${') && !DATE_PARTS.includes(p.value.toLowerCase())) {
      v.report(`unknown date part "${p.value}"`, p.location);
    }
  };
}

const localZone = (ms: number) => -new Date(ms).getTimezoneOffset();

export const date: ExtensionDef = {
  capabilities: ['date'],
  register(reg) {
    reg.add({
      name: 'date',
      kind: 'test',
      extension: 'date',
      tags: [comparatorTag(), ...matchTags(), { name: 'zone', arg: 'string', group: 'zone' }, { name: 'originalzone', group: 'zone' }],
      positional: [
        { name: 'header-name', kind: 'string' },
        { name: 'date-part', kind: 'string' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      check: checkDate(1),
      test(n, rt) {
        const name = rt.str(n.args[0]);
        const fields = selectFields(rt, n, [name]);
        const f = n.tags.has('index') ? fields[0] : fields[0];
        if (!f) return false;
        let text = headerValue(f);
        // RFC 5260 §4.1: in Received the date follows the last ";".
        if (name.toLowerCase() === 'received') text = text.slice(text.lastIndexOf(';') + 1);
        const dt = parseDateTime(text);
        if (!dt) return false;
        const zt = rt.tagStr(n, 'zone');
        const zone = zt !== undefined ? (ZONE.test(zt) ? zoneMinutes(zt) : localZone(dt.ms)) : n.tags.has('originalzone') ? dt.zone : localZone(dt.ms);
        return rt.match(n, [datePart(dt.ms, zone, rt.str(n.args[1]).toLowerCase())], rt.list(n.args[2]));
      },
    });
    reg.add({
      name: 'currentdate',
      kind: 'test',
      extension: 'date',
      tags: [comparatorTag(), ...matchTags(), { name: 'zone', arg: 'string' }],
      positional: [
        { name: 'date-part', kind: 'string' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      check: checkDate(0),
      test(n, rt) {
        const now = (rt.host.now?.() ?? new Date()).getTime();
        const zt = rt.tagStr(n, 'zone');
        const zone = zt !== undefined && ZONE.test(zt) ? zoneMinutes(zt) : localZone(now);
        return rt.match(n, [datePart(now, zone, rt.str(n.args[0]).toLowerCase())], rt.list(n.args[1]));
      },
    });
  },
};

export const index: ExtensionDef = {
  capabilities: ['index'],
  register(reg) {
    for (const t of ['header', 'address', 'date']) {
      reg.addTags('test', t, [
        { name: 'index', arg: 'number', extension: 'index' },
        { name: 'last', extension: 'index' },
      ]);
      reg.addCheck('test', t, checkIndex);
    }
  },
};

export function checkIndex(n: CNode, v: ValidateCtx): void {
  if (n.tags.has('last') && !n.tags.has('index')) v.report(':last needs :index', n.tags.get('last')!.location);
  const i = n.tags.get('index')?.value;
  if (i?.kind === 'number' && i.value < 1) v.report(':index must be 1 or more', i.location);
}
