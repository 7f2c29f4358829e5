// Intent records of mbox appends that no spool message file backs. LMTP delivers local
// recipients before its replies, straight from memory (QueueManager.deliverNow); a crash in the
// middle of such an append would leave a torn entry at the end of the mbox, and the next append
// glued after it. The LMTP client got no reply and sends the message again, so the torn bytes
// only have to go.
//
// The record (a spool intent, spool.ts) is mbox.ts's {offset, length} plus what a check needs
// without the message: `file`, the mbox path, and `head`, the entry's first HEAD_BYTES bytes
// (base64): its From_ line and trace headers, whose Received field names the queue id. It is
// written durably before the append (under the mbox's locks) and removed by the queue once the
// recipient's outcome is final (or kept as the intents of the spool entry that retries it, which
// then has a message file); a removal lost to a crash leaves a record whose entry is complete.
//
// At start, before anything appends, the queue checks each such record that has no message file
// (`repairTornEntry`) under the mbox's locks. The file is cut back to `offset` on this evidence
// only, all of it:
//   - the file is longer than `offset` and shorter than `offset + length`: it ends inside the entry;
//   - its bytes from `offset` equal `head` as far as both go;
//   - no line after the first, from `offset` to the end, starts with "From ": mboxrd quotes every
//     such line of ours (mbox.ts), so one there starts another writer's entry.
// Anything else is left alone: a complete entry (or one followed by others), an entry of which
// no byte reached the file, a mailbox a mail reader has rewritten since. A user's mailbox is
// never cut on less.
//
// Config keys: none.
import type { FileHandle } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import type { MboxIntent, MboxWriter } from './mbox.js';

/** How much of the entry a record keeps: the From_ line and the trace headers. */
export const HEAD_BYTES = 1024;

/** The record of an append with no spool message file behind it. */
export interface StandaloneMboxIntent extends MboxIntent {
  /** The mbox file appended to. */
  file: string;
  /** The entry's first bytes (up to HEAD_BYTES), base64. */
  head: string;
}

/** A record ready to be checked against its mbox. */
export interface TornEntryCheck {
  file: string;
  offset: number;
  length: number;
  head: Buffer;
}

/**
 * What a check found: `truncated` (a torn entry was cut off); the rest left the file alone:
 * `complete` (the file reaches the entry's end), `absent` (the file ends at or before the offset,
 * or is gone), `changed` (the bytes there are not (only) the entry's).
 */
export type RepairOutcome = 'truncated' | 'complete' | 'absent' | 'changed';

const FROM = Buffer.from('From ');
const LINE_FROM = Buffer.from('\nFrom ');
const READ_CHUNK = 64 * 1024;

export function standaloneIntent(file: string, entry: Buffer, intent: MboxIntent): StandaloneMboxIntent {
  return { offset: intent.offset, length: intent.length, file, head: entry.subarray(0, HEAD_BYTES).toString('base64') };
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The record as a check needs it; null for any other record (a spooled delivery's, a damaged one). */
export function parseStandaloneIntent(record: unknown): TornEntryCheck | null {
  if (typeof record !== 'object' || record === null) return null;
  const r = record as Partial<Record<keyof StandaloneMboxIntent, unknown>>;
  if (typeof r.file !== 'string' || !isAbsolute(r.file) || typeof r.head !== 'string') return null;
  if (!isCount(r.offset) || !isCount(r.length) || r.length === 0) return null;
  const head = Buffer.from(r.head, 'base64');
  // Every entry starts with its From_ line (mboxEntry).
  if (head.length > r.length || !head.subarray(0, FROM.length).equals(FROM)) return null;
  return { file: r.file, offset: r.offset, length: r.length, head };
}

/** Checks one record against its mbox and cuts a torn entry off (see the header). Throws DeliveryError. */
export async function repairTornEntry(writer: MboxWriter, rec: TornEntryCheck): Promise<RepairOutcome> {
  // A file that is gone holds nothing of the entry; it is not created just to be looked at.
  const outcome = await writer.withExistingFile(rec.file, async (fh): Promise<RepairOutcome> => {
    const size = (await fh.stat()).size;
    if (size <= rec.offset) return 'absent';
    if (size >= rec.offset + rec.length) return 'complete';
    if (!(await endsInTornEntry(fh, rec, size))) return 'changed';
    await fh.truncate(rec.offset);
    await fh.datasync();
    return 'truncated';
  });
  return outcome ?? 'absent';
}

/** True when the bytes from the offset to `size` match `head` as far as both go and start no other entry. */
async function endsInTornEntry(fh: FileHandle, rec: TornEntryCheck, size: number): Promise<boolean> {
  // The last bytes of the chunk before, so a "\nFrom " across two chunks is seen.
  let carry = Buffer.alloc(0);
  for (let pos = rec.offset; pos < size; ) {
    const buf = Buffer.alloc(Math.min(READ_CHUNK, size - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    // Shorter than its size under our locks: someone ignores them; that is no evidence.
    if (bytesRead < buf.length) return false;
    const at = pos - rec.offset;
    if (at < rec.head.length) {
      const n = Math.min(rec.head.length - at, buf.length);
      if (!buf.subarray(0, n).equals(rec.head.subarray(at, at + n))) return false;
    }
    // The entry's own From_ line is at the offset, with no LF before it in what is read.
    const seen = Buffer.concat([carry, buf]);
    if (seen.includes(LINE_FROM)) return false;
    carry = seen.subarray(Math.max(0, seen.length - (LINE_FROM.length - 1)));
    pos += buf.length;
  }
  return true;
}
