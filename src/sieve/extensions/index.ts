// The default registry: RFC 5228 plus every extension module, registered in dependency order
// (commands first, then modules that add tags to them). `capabilities()` is the list ManageSieve
// and `ihave` advertise.
import { Registry } from '../registry.js';
import body from './body.js';
import copy from './copy.js';
import core from './core.js';
import { date, index } from './date.js';
import duplicate from './duplicate.js';
import editheader from './editheader.js';
import enclose from './enclose.js';
import encodedCharacter from './encoded-character.js';
import envelope from './envelope.js';
import environment from './environment.js';
import fileinto from './fileinto.js';
import ihave from './ihave.js';
import imap4flags from './imap4flags.js';
import include from './include.js';
import mailbox from './mailbox.js';
import mime from './mime.js';
import regex from './regex.js';
import reject from './reject.js';
import replace from './replace.js';
import { asciiNumeric, relational } from './relational.js';
import spamtest from './spamtest.js';
import subaddress from './subaddress.js';
import vacation from './vacation.js';
import variables from './variables.js';

export function createRegistry(): Registry {
  return new Registry()
    .use(core)
    .use(fileinto)
    .use(reject)
    .use(envelope)
    .use(encodedCharacter)
    .use(imap4flags)
    .use(variables)
    .use(body)
    .use(relational)
    .use(asciiNumeric)
    .use(subaddress)
    .use(copy)
    .use(vacation)
    .use(date)
    .use(index)
    .use(editheader)
    .use(mailbox)
    .use(include)
    .use(regex)
    .use(spamtest)
    .use(duplicate)
    .use(environment)
    .use(ihave)
    .use(mime)
    .use(replace)
    .use(enclose);
}

let shared: Registry | undefined;

/** One registry shared by every compile (specs are immutable after creation). */
export function defaultRegistry(): Registry {
  shared ??= createRegistry();
  return shared;
}

export function capabilities(): string[] {
  return [...defaultRegistry().capabilities].filter((c) => !['comparator-i;octet', 'comparator-i;ascii-casemap'].includes(c)).sort();
}
