// Folder names for local delivery (fileinto, quarantine): validation and the mapping to a name
// on disk. A name uses the IMAP hierarchy separator '/' (RFC 3501 §5.1.1); '.' is taken as a
// separator too, since Maildir++ cannot tell the two apart. "INBOX" (any case, RFC 3501 §5.1)
// is the mailbox itself, and a leading "INBOX/" or "INBOX." is dropped (Courier-style names).
// Refused: empty segments (so no leading '.', no "..", no trailing separator), NUL and control
// characters, '\\', and names whose name on disk would be too long: the segments joined by '.'
// must fit in 255 bytes (NAME_MAX) with a Maildir++ leading '.' or an mbox dotlock's ".lock",
// so 250 bytes, a permanent error rather than a retry on ENAMETOOLONG. Maildir++ directory:
// "." + segments joined by '.'; mbox (mbox.ts): segments joined by '.' under "<mbox>.d/".
// Each segment is written in IMAP's modified UTF-7 (mutf7.ts), as Dovecot and Courier name
// Maildir++ folders, so a folder made by a Sieve `fileinto "Entwürfe"` is the one an IMAP
// server in front of the same Maildir shows; `mailbox.folder_names: utf8` keeps UTF-8 names
// (Dovecot's `UTF-8` mail_location option).
//
// Config keys: `mailbox.folder_names` (through the writers' options).

import { encodeMutf7 } from './mutf7.js';

export class FolderNameError extends Error {}

/** How a folder's segments are written on disk. */
export type FolderNames = 'utf7' | 'utf8';

/** 255 (NAME_MAX) less ".lock", the longest decoration a folder's name gets on disk. */
const MAX_NAME = 250;

/** Hierarchy segments of a folder; [] for INBOX. Throws FolderNameError. */
export function folderSegments(folder: string | undefined): string[] {
  if (folder === undefined || folder === '' || /^inbox$/i.test(folder)) return [];
  if (Buffer.byteLength(folder) > MAX_NAME) throw new FolderNameError('folder name too long');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(folder)) throw new FolderNameError('invalid character in folder name');
  const segs = folder.split(/[/.]/);
  if (segs.length > 1 && /^inbox$/i.test(segs[0]!)) segs.shift();
  if (segs.some((s) => s === '')) throw new FolderNameError(`invalid folder name: ${JSON.stringify(folder)}`);
  return segs;
}

/** The folder's name on disk: its segments, encoded, joined by '.'; '' for INBOX. Throws FolderNameError. */
export function folderDiskName(folder: string | undefined, names: FolderNames = 'utf7'): string {
  const segs = folderSegments(folder);
  const name = (names === 'utf7' ? segs.map(encodeMutf7) : segs).join('.');
  // Modified UTF-7 can be longer than the UTF-8 checked above (a CJK character: 3 bytes, 2.7 in base64, plus the shifts).
  if (name.length > MAX_NAME) throw new FolderNameError('folder name too long');
  return name;
}

/** Maildir++ sub-directory name (".A.B"), or '' for INBOX. */
export function maildirPlusName(folder: string | undefined, names: FolderNames = 'utf7'): string {
  const name = folderDiskName(folder, names);
  return name ? `.${name}` : '';
}
