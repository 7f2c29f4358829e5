// Folder names for local delivery (fileinto, quarantine): validation and the mapping to a name
// on disk. A name uses the IMAP hierarchy separator '/' (RFC 3501 §5.1.1); '.' is taken as a
// separator too, since Maildir++ cannot tell the two apart. "INBOX" (any case, RFC 3501 §5.1)
// is the mailbox itself, and a leading "INBOX/" or "INBOX." is dropped (Courier-style names).
// Refused: empty segments (so no leading '.', no "..", no trailing separator), NUL and control
// characters, '\\', and names whose name on disk would be too long: the segments joined by '.'
// must fit in 255 bytes (NAME_MAX) with a Maildir++ leading '.' or an mbox dotlock's ".lock",
// so 250 bytes, a permanent error rather than a retry on ENAMETOOLONG. Maildir++ directory:
// "." + segments joined by '.'; mbox (mbox.ts): segments joined by '.' under "<mbox>.d/".
//
// Config keys: none.

export class FolderNameError extends Error {}

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
  // The name on disk (segments joined by '.') is never longer than `folder`, checked above.
  return segs;
}

/** Maildir++ sub-directory name (".A.B"), or '' for INBOX. */
export function maildirPlusName(folder: string | undefined): string {
  const segs = folderSegments(folder);
  return segs.length ? `.${segs.join('.')}` : '';
}
