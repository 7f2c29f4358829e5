# An example admin (gateway) script for the sieve plugin:
#   plugins:
#     - sieve: { scripts: [rules/examples/gateway.sieve] }
# It runs at SMTP DATA for every recipient; `postern sieve check` compiles it.
require ["reject", "envelope", "fileinto", "editheader", "body", "regex"];

# Refuse mail that claims to come from our own domain but arrives from outside.
if allof (address :domain "from" "example.test",
          not envelope :domain "from" "example.test") {
  reject "Forged sender domain";
  stop;
}

# Executable attachments are refused with a clear reason.
if body :raw :contains ["filename=\"", "name=\""] {
  if body :raw :regex ["\\.(exe|scr|js|vbs)\""] {
    reject "Executable attachments are not accepted";
    stop;
  }
}

# A scanner header above the threshold sends the message to the recipients' Quarantine folder.
if header :contains "X-Spam-Flag" "YES" {
  fileinto "Quarantine";
  stop;
}

# Mark what passed the rules.
addheader "X-Postern-Rules" "passed";
