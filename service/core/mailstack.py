"""The mail stack's configuration: Postfix and Dovecot files that read the `mail_*` views of
schema.sql, for `mailprov mailstack config` (README, "Mail stack").

Everything a site may need to change is a field of `Site`; everything else is fixed here,
so the files the end-to-end test runs are the files an operator installs.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Postfix's pgsql maps: name -> (what it answers, its query). Each answers with what
# Postfix uses (a domain, a home, an address list), never a constant a transport could
# take for a path. %s is the whole key, %u its local part, %d its domain; Postfix quotes
# them, and skips a %d query for a key with no domain.
POSTFIX_MAPS: dict[str, tuple[str, str]] = {
    "domains": ("hosted domains (virtual_mailbox_domains)",
                "SELECT name FROM mail_domains WHERE name = '%s' AND NOT backupmx"),
    "backup-domains": ("domains this host is a backup MX for (relay_domains)",
                       "SELECT name FROM mail_domains WHERE name = '%s' AND backupmx"),
    "alias-domains": ("alias domains (virtual_alias_domains)",
                      "SELECT alias_domain FROM mail_alias_domains WHERE alias_domain = '%s'"),
    "mailboxes": ("mailboxes, by the home that Dovecot delivers to (virtual_mailbox_maps)",
                  "SELECT home || '/' FROM mail_mailboxes WHERE address = '%s'"),
    "aliases": ("aliases, catch-alls (@domain) and each mailbox to itself, so that a "
                "catch-all never takes a mailbox's mail",
                "SELECT goto FROM mail_virtual_aliases WHERE address = '%s'"),
    "roles": ("postmaster@ and abuse@ of every domain, to the domain's postmaster address "
              "(by default its first mailbox)",
              "SELECT goto FROM mail_roles WHERE domain = '%d' "
              "AND '%u' IN ('postmaster', 'abuse')"),
    # x@alias becomes x@target only where x@target exists (a mailbox, an alias, a role or
    # the target's catch-all): an unknown x@alias is refused at RCPT like an unknown
    # x@target, instead of accepted and bounced. The catch-all key `@alias` maps nothing.
    "alias-domain-maps": (
        "x@alias-domain -> x@target, for the x that exist at the target",
        "SELECT '%u@' || target_domain FROM mail_alias_domains WHERE alias_domain = '%d' "
        "AND '%u' <> '' AND ('%u' IN ('postmaster', 'abuse') OR EXISTS (SELECT 1 FROM "
        "mail_virtual_aliases WHERE address IN ('%u@' || target_domain, '@' || "
        "target_domain)))"),
}
# looked up in this order, each key form across all of them: an alias or a mailbox of a
# role's name comes before the role
VIRTUAL_ALIAS_MAPS = ("aliases", "roles", "alias-domain-maps")

DOVECOT_QUERIES = {
    "password_query": "SELECT address AS user, password_hash AS password FROM mail_mailboxes "
                      "WHERE address = '%u'",
    # home: per mailbox, named for good when it is made (schema.sql, mailboxes.home)
    "user_query": "SELECT '{root}/' || home AS home, quota_rule FROM mail_mailboxes "
                  "WHERE address = '%u'",
    "iterate_query": "SELECT address AS user FROM mail_mailboxes",
}


@dataclass(frozen=True)
class Site:
    """What differs between installations. Paths are where the files will live."""

    database_url: str
    postfix_dir: str = "/etc/postfix"
    dovecot_dir: str = "/etc/dovecot"
    vmail_root: str = "/var/vmail"
    vmail_uid: int = 5000
    vmail_gid: int = 5000
    # Postfix's smtpd service (master.cf): "smtp" (port 25), or host:port
    smtp_listen: str = "smtp"
    # Dovecot's IMAP: plain (STARTTLS with TLS files), and implicit TLS when TLS files are set
    imap_address: str = "*"
    imap_port: int = 143
    imaps_port: int = 993
    # 0: Postfix hands mail to Dovecot on the socket in its own queue directory
    # (private/dovecot-lmtp); else on 127.0.0.1:lmtp_port
    lmtp_port: int = 0
    postfix_queue_dir: str = "/var/spool/postfix"
    tls_cert: str = ""
    tls_key: str = ""
    # 0: no doveadm HTTP listener (kicks off)
    doveadm_port: int = 0
    doveadm_key: str = ""
    # for a Dovecot of its own (dovecot.conf, `dovecot -c`): its runtime directory and log
    base_dir: str = "/run/dovecot"
    log_path: str = "syslog"
    # the DKIM signer's milter socket (OpenDKIM on `mailprov mailstack dkim`'s files,
    # e.g. inet:127.0.0.1:8891); empty: mail leaves unsigned
    dkim_milter: str = ""


@dataclass(frozen=True)
class File:
    path: str  # relative to the output directory
    text: str
    secret: bool = False  # holds a password or a key: 0640, group of the daemon that reads it
    group: str = ""


def _pg(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise ValueError("DATABASE_URL is not a postgresql://user@host:port/dbname URL")
    return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port or 5432),
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or ""), "dbname": parts.path.strip("/")}


def _postfix_maps(site: Site) -> list[File]:
    pg = _pg(site.database_url)
    return [File(f"postfix/pgsql/{name}.cf",
                 f"# {what}\nhosts = {pg['host']}:{pg['port']}\nuser = {pg['user']}\n"
                 f"password = {pg['password']}\ndbname = {pg['dbname']}\nquery = {query}\n",
                 secret=True, group="postfix")
            for name, (what, query) in POSTFIX_MAPS.items()]


def _map(site: Site, name: str) -> str:
    # proxy: one proxymap process holds the database connections for every smtpd and
    # cleanup, and reads the files outside their chroot
    return f"proxy:pgsql:{site.postfix_dir}/pgsql/{name}.cf"


def postfix_milters(milter: str) -> list[str]:
    """main.cf's lines for the DKIM signer at `milter`: mail submitted and mail relayed
    both pass it; while it is down mail waits in the queue (tempfail), never leaves
    unsigned."""
    return [f"smtpd_milters = {milter}", "non_smtpd_milters = $smtpd_milters",
            "milter_default_action = tempfail"]


def postfix_main(site: Site) -> str:
    lmtp = (f"inet:127.0.0.1:{site.lmtp_port}" if site.lmtp_port else "unix:private/dovecot-lmtp")
    lines = [
        "# mailprov: hosted domains, mailboxes and aliases from Postgres, delivered to",
        "# Dovecot over LMTP (generated by `mailprov mailstack config`)",
        f"virtual_mailbox_domains = {_map(site, 'domains')}",
        f"virtual_mailbox_maps = {_map(site, 'mailboxes')}",
        f"virtual_alias_domains = {_map(site, 'alias-domains')}",
        "virtual_alias_maps = " + ", ".join(_map(site, m) for m in VIRTUAL_ALIAS_MAPS),
        f"relay_domains = {_map(site, 'backup-domains')}",
        f"virtual_transport = lmtp:{lmtp}",
        # an unknown address is refused at RCPT, not accepted and bounced (the default,
        # said here because everything above depends on it)
        "smtpd_reject_unlisted_recipient = yes",
    ]
    if site.dkim_milter:
        lines += postfix_milters(site.dkim_milter)
    if site.tls_cert:
        lines += [f"smtpd_tls_cert_file = {site.tls_cert}",
                  f"smtpd_tls_key_file = {site.tls_key}", "smtpd_tls_security_level = may"]
    return "\n".join(lines) + "\n"


def postfix_master(site: Site) -> str:
    return ("# the SMTP listener; Debian's master.cf has it for port 25 already\n"
            f"{site.smtp_listen} inet n - y - - smtpd\n")


def dovecot_sql(site: Site) -> str:
    pg = _pg(site.database_url)
    connect = " ".join(f"{k}={v}" for k, v in pg.items() if v)
    queries = "".join(f"{name} = {query.format(root=site.vmail_root)}\n"
                      for name, query in DOVECOT_QUERIES.items())
    # hashes carry their scheme ({ARGON2ID}$argon2id$...); the default only names one
    return f"driver = pgsql\nconnect = {connect}\ndefault_pass_scheme = ARGON2ID\n{queries}"


def dovecot_fragment(site: Site) -> str:
    tls = bool(site.tls_cert)
    lmtp = (f"  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {site.lmtp_port}\n  }}"
            if site.lmtp_port else
            f"  unix_listener {site.postfix_queue_dir}/private/dovecot-lmtp {{\n"
            "    mode = 0600\n    user = postfix\n    group = postfix\n  }")
    imaps = (f"  inet_listener imaps {{\n    address = {site.imap_address}\n"
             f"    port = {site.imaps_port}\n    ssl = yes\n  }}\n" if tls else "")
    sql = f"{site.dovecot_dir}/dovecot-sql.conf.ext"
    parts = [f"""# mailprov: virtual mailboxes from Postgres
# (generated by `mailprov mailstack config`)
auth_mechanisms = plain login
# addresses are stored lower-case
auth_username_format = %Lu
passdb {{
  driver = sql
  args = {sql}
}}
userdb {{
  driver = sql
  args = {sql}
}}
# every mailbox's files belong to one owner, under {site.vmail_root}/<home>
mail_uid = {site.vmail_uid}
mail_gid = {site.vmail_gid}
first_valid_uid = {site.vmail_uid}
last_valid_uid = {site.vmail_uid}
first_valid_gid = {site.vmail_gid}
last_valid_gid = {site.vmail_gid}
mail_location = maildir:~/Maildir
# quota_rule comes from the mailbox (userdb); `count` keeps the usage in Dovecot's index
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
service imap-login {{
  inet_listener imap {{
    address = {site.imap_address}
    port = {site.imap_port}
  }}
{imaps}}}
service lmtp {{
{lmtp}
}}
"""]
    if tls:
        parts.append(f"ssl = required\nssl_cert = <{site.tls_cert}\nssl_key = <{site.tls_key}\n")
    else:
        # without TLS, passwords travel in the clear: Dovecot's default still refuses
        # them except from the local host
        parts.append("ssl = no\n")
    if site.doveadm_port:
        # the worker's kicks (worker/kicks.py); the key is read from its own file
        parts.append(f"""doveadm_api_key = <{site.dovecot_dir}/doveadm-api.key
service doveadm {{
  inet_listener http {{
    address = 127.0.0.1
    port = {site.doveadm_port}
  }}
}}
""")
    return "".join(parts)


def dovecot_conf(site: Site) -> str:
    """A whole dovecot.conf, for a Dovecot of its own (`dovecot -c`)."""
    return (f"# a Dovecot of mailprov's own: dovecot -F -c {site.dovecot_dir}/dovecot.conf\n"
            f"protocols = imap lmtp\nbase_dir = {site.base_dir}\nlog_path = {site.log_path}\n"
            f"!include {site.dovecot_dir}/conf.d/90-mailprov.conf\n")


def files(site: Site) -> list[File]:
    if site.doveadm_port and not site.doveadm_key:
        raise ValueError("a doveadm port needs a key: set MAILPROV_DOVEADM_KEY or --doveadm-key")
    if bool(site.tls_cert) != bool(site.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    out = [File("postfix/main.cf", postfix_main(site)),
           File("postfix/master.cf", postfix_master(site)),
           *_postfix_maps(site),
           File("dovecot/conf.d/90-mailprov.conf", dovecot_fragment(site)),
           File("dovecot/dovecot-sql.conf.ext", dovecot_sql(site), secret=True, group="dovecot"),
           File("dovecot/dovecot.conf", dovecot_conf(site))]
    if site.doveadm_port:
        out.append(File("dovecot/doveadm-api.key", site.doveadm_key, secret=True,
                        group="dovecot"))
    return out


def write(site: Site, out: Path) -> list[Path]:
    """Write every file under `out`; the paths written. Files with a secret are 0640, and
    owned by the group of the daemon that reads them where that group exists."""
    written = []
    for f in files(site):
        path = out / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        # created with its final mode: a secret is never readable by others, not even briefly
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640 if f.secret else 0o644)
        with os.fdopen(fd, "w") as stream:
            stream.write(f.text)
        os.chmod(path, 0o640 if f.secret else 0o644)
        if f.group and os.geteuid() == 0:
            try:
                os.chown(path, 0, grp.getgrnam(f.group).gr_gid)
            except KeyError:
                pass  # the package that makes the group is not installed (yet)
        written.append(path)
    return written
