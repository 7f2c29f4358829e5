// Folder names for local delivery (fileinto, quarantine): validation and the mapping to a name
// on disk. A name uses the IMAP hierarchy separator '/' (RFC 3501 §5.1.1); '.' is taken as a
// separator too, since Maildir++ cannot tell the two apart. "INBOX" (any case, RFC 3501 §5.1)
// is the mailbox itself, and a leading "INBOX/" or "INBOX." is dropped (Courier-style names).
// Refused: empty segments (so no leading '.', no "..", no trailing separator), NUL and control
// characters, '\\', and names over 255 bytes. Maildir++ directory: "." + segments joined by
// '.'; mbox (mbox.ts): segments joined by '.' under "<mbox>.d/".
//
// Config keys: none.

export class FolderNameError extends Error {}

/** Hierarchy segments of a folder; [] for INBOX. Throws FolderNameError. */
export function folderSegments(folder: string | undefined): string[] {
  if (folder === undefined || folder === '' || /^inbox$/i.test(folder)) return [];
  if (Buffer.byteLength(folder) > 255) throw new FolderNameError('folder name too long');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(folder)) throw new FolderNameError('invalid character in folder name');
  const segs = folder.split(/[/.]/);
  if (segs.length > 1 && /^inbox$/i.test(segs[0]!)) segs.shift();
  if (segs.some((s) => s === '')) throw new FolderNameError(`invalid folder name: ${JSON.stringify(folder)}`);
  return segs;
}

/** Maildir++ sub-directory name (".A.B"), or '' for INBOX. */
export function maildirPlusName(folder: string | undefined): string {
  const segs = folderSegments(folder);
  return segs.length ? `.${segs.join('.')}` : '';
}
