// IMAP's modified UTF-7 (RFC 3501 §5.1.3), the encoding Dovecot and Courier give Maildir++
// folder names on disk: printable US-ASCII (0x20–0x7e) stands for itself except '&', which is
// written "&-"; any other run of characters is UTF-16BE in base64 with ',' for '/', no padding,
// between '&' and '-'. "Entwürfe" is ".Entw&APw-rfe" in a Dovecot Maildir.
//
// Config keys: none (`mailbox.folder_names` chooses it, delivery/config.ts).

const isDirect = (code: number) => code >= 0x20 && code <= 0x7e;

/** `name` in modified UTF-7. */
export function encodeMutf7(name: string): string {
  let out = '';
  let i = 0;
  while (i < name.length) {
    const code = name.charCodeAt(i);
    if (isDirect(code)) {
      out += code === 0x26 ? '&-' : name[i];
      i++;
      continue;
    }
    let end = i;
    while (end < name.length && !isDirect(name.charCodeAt(end))) end++;
    // JS strings are UTF-16 already: surrogate pairs go out as they are, as the RFC asks.
    const utf16 = Buffer.alloc((end - i) * 2);
    for (let k = i; k < end; k++) utf16.writeUInt16BE(name.charCodeAt(k), (k - i) * 2);
    out += `&${utf16.toString('base64').replace(/=+$/, '').replaceAll('/', ',')}-`;
    i = end;
  }
  return out;
}
