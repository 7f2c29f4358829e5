// What a local delivery stored, named precisely enough to take it back: the queue does so when a
// copy was stored before the client's reply and the client is then told 4xx (the rest of the
// message could not be spooled), since the client sends the message again (queue/manager.ts,
// takeBack). A Maildir copy is its file; an mbox copy is the entry appended to the file, with
// its bytes, so that it is cut off only while the file still ends with exactly those bytes.
// A copy an earlier attempt stored, which this delivery only found (`found`), is named too: a
// recipient answered 250 relies on it, so it must stay; only the delivery that wrote a copy
// ever takes it back.
//
// Config keys: none.
import { basename, dirname, join } from 'node:path';

export type StoredCopy = ({ kind: 'maildir'; file: string } | MboxCopy) & {
  /** Stored by an earlier attempt under the same queue id; this delivery wrote nothing. */
  found?: true;
};

interface MboxCopy {
  kind: 'mbox';
  file: string;
  /** Where the entry starts. */
  offset: number;
  /** The entry's bytes, as written (From_ line to the blank line after the message). */
  entry: Buffer;
}

/**
 * One name per copy: two recipients' deliveries that found or wrote the same copy share it. A
 * Maildir copy is named by its folder and the unique part of its file name (before the first
 * ',': maildir.ts), which stay the same when a reader moves it from new/ to cur/ and adds flags.
 */
export function copyIdentity(c: StoredCopy): string {
  if (c.kind === 'mbox') return `${c.file}\0${c.offset}`;
  return join(dirname(dirname(c.file)), basename(c.file).split(',')[0]!);
}
