// Queue ids: unique, sortable by acceptance time, and safe as file names on any file system
// (upper-case Crockford base32, no case-only differences). 18 characters: 10 encode the
// millisecond clock (48 bits, as ULID does), 8 are random (40 bits). Within one millisecond the
// random part is incremented, so ids made by one process sort in the order they were made.
//
// Config keys: none.
import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TIME_CHARS = 10;
const RAND_CHARS = 8;

export const QUEUE_ID_RE = /^[0-9A-HJKMNP-TV-Z]{18}$/;

let lastMs = -1;
let lastRand: number[] = [];

// Random bytes are drawn 4 KB at a time: one crypto call per 512 ids instead of one per id.
let pool = Buffer.alloc(0);
let poolPos = 0;

function randomDigits(): number[] {
  if (poolPos + RAND_CHARS > pool.length) {
    pool = randomBytes(4096);
    poolPos = 0;
  }
  const out = new Array<number>(RAND_CHARS);
  for (let i = 0; i < RAND_CHARS; i++) out[i] = pool[poolPos++]! & 31;
  return out;
}

/** A fresh queue id. `now` is for tests. */
export function newQueueId(now: number = Date.now()): string {
  let rand: number[];
  if (now <= lastMs) {
    // Same (or a stepped-back) clock: keep the last time and count up, so ids stay increasing.
    now = lastMs;
    rand = [...lastRand];
    let i = RAND_CHARS - 1;
    while (i >= 0 && rand[i] === 31) rand[i--] = 0;
    if (i < 0) {
      // 2^40 ids in one millisecond: move on to the next one.
      now = lastMs + 1;
      rand = randomDigits();
    } else {
      rand[i]! += 1;
    }
  } else {
    rand = randomDigits();
  }
  lastMs = now;
  lastRand = rand;
  let t = '';
  let ms = now;
  for (let i = 0; i < TIME_CHARS; i++) {
    t = ALPHABET[ms % 32]! + t;
    ms = Math.floor(ms / 32);
  }
  return t + rand.map((d) => ALPHABET[d]).join('');
}

export function isQueueId(s: string): boolean {
  return QUEUE_ID_RE.test(s);
}

/** Milliseconds since the epoch encoded in a queue id. */
export function queueIdTime(id: string): number {
  let ms = 0;
  for (let i = 0; i < TIME_CHARS; i++) ms = ms * 32 + ALPHABET.indexOf(id[i]!);
  return ms;
}
