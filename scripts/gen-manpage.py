#!/usr/bin/env python3
"""Renders syncctl(1) from the argument parser's own description of the command line.

    syncctl --experimental-dump-help | python3 scripts/gen-manpage.py [--append FILE] > syncctl.1

swift-argument-parser prints every command, subcommand, option, default and list of allowed
values as JSON with `--experimental-dump-help`; this turns that JSON into a man(7) page, so the
page can never drift from what `syncctl --help` says. scripts/package.sh runs it at build time.

Layout: NAME, SYNOPSIS (one line per command), DESCRIPTION (the root command's abstract and
discussion), OPTIONS (the root's), COMMANDS (a subsection per subcommand, nested ones such as
`versions list` included, each with its own options), then whatever roff `--append` names
(the package adds FILES, ENVIRONMENT and SEE ALSO that way).

The date on the page comes from SOURCE_DATE_EPOCH when set (the package sets it to the commit's
date), so two builds of one commit give the same bytes.
"""
import argparse
import datetime
import json
import os
import re
import sys


def esc(text):
    """Escapes prose for roff: backslashes, and every hyphen as \\- so that options
    (--state-dir) and commands (gui-url) come out as typed, copy into a shell, and are never
    broken across lines at a hyphen."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def line(text):
    """One output line that roff cannot take for a request (a leading . or ')."""
    return "\\&" + text if text[:1] in (".", "'") else text


def literal(text):
    """Escapes a line shown as is (examples): every hyphen is a minus sign there."""
    return line(text.replace("\\", "\\e").replace("-", "\\-"))


def prose(text):
    """Renders a discussion: blank lines part paragraphs; lines indented by spaces (examples,
    tables of commands) are kept as they are, in a no-fill block; other lines are joined."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip("\n")):
        words, pre = [], []

        def flush_words():
            if words:
                out.append(line(esc(" ".join(w.strip() for w in words))))
                words.clear()

        def flush_pre():
            if pre:
                out.extend([".RS 2", ".nf"] + [literal(p.strip()) for p in pre] + [".fi", ".RE"])
                pre.clear()

        out.append(".PP")
        for raw in block.split("\n"):
            if raw.startswith(" ") and raw.strip():
                flush_words()
                pre.append(raw)
            else:
                if pre:
                    # Text after an example starts a paragraph of its own.
                    flush_pre()
                    out.append(".PP")
                words.append(raw)
        flush_words()
        flush_pre()
    return out


def shown(arg):
    return arg.get("shouldDisplay", True)


def names(arg):
    """`-h, --help` in bold, as the user types them."""
    parts = []
    for n in arg.get("names", []):
        dash = "-" if n["kind"] in ("short", "longWithSingleDash") else "--"
        parts.append("\\fB" + (dash + n["name"]).replace("-", "\\-") + "\\fR")
    return ", ".join(parts)


def value(arg):
    return "\\fI" + esc(arg.get("valueName", "value")) + "\\fR"


def usage(arg):
    """How an argument appears in a synopsis line."""
    if arg["kind"] == "positional":
        text = value(arg)
    else:
        first = (arg.get("preferredName") or arg["names"][0])
        dash = "-" if first["kind"] in ("short", "longWithSingleDash") else "--"
        text = "\\fB" + (dash + first["name"]).replace("-", "\\-") + "\\fR"
        if arg["kind"] == "option":
            text += " " + value(arg)
    if arg.get("isRepeating"):
        text += " ..."
    return "[" + text + "]" if arg.get("isOptional") else text


def synopsis(path, cmd):
    """`syncctl run --dir path [options]`: required arguments spelled out, optional ones
    folded into [options] unless they are positional."""
    args = [a for a in cmd.get("arguments", []) if shown(a) and not is_help(a)]
    parts = [usage(a) for a in args if not a.get("isOptional") or a["kind"] == "positional"]
    if any(a.get("isOptional") and a["kind"] != "positional" for a in args):
        parts.insert(0, "[\\fIoptions\\fR]")
    if [s for s in cmd.get("subcommands", []) if shown(s)]:
        parts.append("\\fIcommand\\fR")
    return [".HP 4", line("\\fB" + " ".join(path).replace("-", "\\-") + "\\fR " + " ".join(parts)).rstrip()]


def is_help(arg):
    return any(n["name"] in ("help", "h") for n in arg.get("names", [])) and arg["kind"] == "flag"


def options(cmd, include_help):
    """A tagged paragraph per shown argument: its names and value, what it does, the values
    it takes and its default."""
    out = []
    for arg in cmd.get("arguments", []):
        if not shown(arg) or (is_help(arg) and not include_help):
            continue
        if arg["kind"] == "positional":
            tag = value(arg)
        else:
            tag = names(arg) + (" " + value(arg) if arg["kind"] == "option" else "")
        if arg.get("isRepeating") and arg["kind"] != "flag":
            tag += " ..."
        text = esc(arg.get("abstract", "").strip())
        discussion = arg.get("discussion")
        if isinstance(discussion, str) and discussion.strip():
            text += " " + esc(discussion.strip())
        extra = []
        values = arg.get("allValues")
        if values and not any(f"'{v}'" in arg.get("abstract", "") or v in arg.get("abstract", "") for v in values):
            extra.append("One of: " + ", ".join(esc(v) for v in values) + ".")
        default = arg.get("defaultValue")
        if default not in (None, "", "false", "[]") and arg["kind"] != "flag":
            extra.append("Default: " + esc(str(default)) + ".")
        if arg.get("isRepeating") and arg["kind"] != "flag" and "repeatable" not in text:
            extra.append("May be given more than once.")
        out += [".TP", line(tag), line(" ".join(x for x in [text] + extra if x))]
    return out


def subcommands(path, cmd):
    """A subsection per visible subcommand (the generated `help` command left out: it only
    prints the help this page already holds), depth first, so `versions list` follows
    `versions`."""
    out = []
    for sub in cmd.get("subcommands", []):
        if not shown(sub) or sub["commandName"] == "help":
            continue
        full = path + [sub["commandName"]]
        out.append(".SS " + json.dumps(" ".join(full)).replace("-", "\\-"))
        out += synopsis(full, sub)
        if sub.get("abstract"):
            out += [".PP", line(esc(sub["abstract"].strip()))]
        if isinstance(sub.get("discussion"), str) and sub["discussion"].strip():
            out += prose(sub["discussion"])
        opts = options(sub, include_help=False)
        if opts:
            out += [".PP", "Options:", ".RS 4"] + opts + [".RE"]
        out += subcommands(full, sub)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", help="the dump-help JSON (default: standard input)")
    parser.add_argument("--append", action="append", default=[], help="roff file to add at the end (repeatable)")
    parser.add_argument("--version", default="", help="version shown in the page footer")
    args = parser.parse_args()
    with open(args.json) if args.json else sys.stdin as f:
        root = json.load(f)["command"]
    name = root["commandName"]
    when = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or datetime.datetime.now().timestamp(), datetime.timezone.utc)
    footer = f"{name} {args.version}".strip()

    out = [
        f'.\\" Generated by scripts/gen-manpage.py from `{name} --experimental-dump-help`; do not edit.',
        f'.TH {name.upper()} 1 "{when:%Y-%m-%d}" "{footer}" "User Commands"',
        ".nh",  # no hyphenation: option names and paths must stay whole
        ".ad l",  # ragged right: long option names make justified lines gappy
        ".SH NAME",
        line(f"{name} \\- {esc(root.get('abstract', '').strip().rstrip('.'))}"),
        ".SH SYNOPSIS",
    ]
    out += synopsis([name], root)
    for sub in root.get("subcommands", []):
        if shown(sub) and sub["commandName"] != "help":
            out += synopsis([name, sub["commandName"]], sub)
    out.append(".SH DESCRIPTION")
    if root.get("abstract"):
        out += [".PP", line(esc(root["abstract"].strip()))]
    if isinstance(root.get("discussion"), str) and root["discussion"].strip():
        out += prose(root["discussion"])
    out += [".SH OPTIONS"] + options(root, include_help=True)
    out += [".SH COMMANDS"] + subcommands([name], root)
    for extra in args.append:
        with open(extra) as f:
            out += [l.rstrip("\n") for l in f]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
