#!/usr/bin/env python3
"""Writes the manual pages tcp-audit(8) and tcp-audit-plugins(7).

The options come from the built binary itself: tcp-audit --help (the core's
flags, by section) and tcp-audit --list-plugins (each plugin's option table,
with types, defaults and help), so the pages say what the program does and
cannot drift from it.  The prose around them is in the .in templates here.

    gen-man.py TCP-AUDIT VERSION PLUGINDIR SRCDIR OUT8 OUT7
"""
import datetime
import os
import re
import subprocess
import sys


def esc(text):
    """Text for a troff line: backslashes, dashes of options, a leading dot."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w-])-(?=[-\w])", r"\\-", text)
    text = re.sub(r"(?<=\\-)-", r"\\-", text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def run(binary, *args):
    env = dict(os.environ)
    env.pop("TCP_AUDIT_PLUGIN_PATH", None)  # the build tree's plugins, nothing else
    return subprocess.run([binary] + list(args), capture_output=True, text=True, check=True,
                          env=env).stdout


def options_from_help(help_text):
    """The --help text's option sections as troff: .SS per heading, .TP per option."""
    out, section, item = [], None, None
    examples = []

    def flush():
        nonlocal item
        if item:
            flag, words = item
            out.append(".TP")
            out.append(flag)
            out.append(esc(" ".join(words)))
        item = None

    in_note = False
    for line in help_text.splitlines():
        if not line.strip():
            flush()
            in_note = False
            continue
        if re.fullmatch(r"[A-Z][^:]*:", line):
            flush()
            section = line[:-1]
            if section not in ("Examples",):
                out.append('.SS "%s"' % esc(section))
            continue
        if section is None:
            continue
        if section == "Examples":
            examples.append(line.strip())
            continue
        m = re.match(r"  ([-(]\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            flush()
            flag = m.group(1).strip()
            # "-p, --param KEY=VALUE": flags bold, their arguments italic
            parts = []
            for word in flag.split(" "):
                if word.startswith("("):
                    parts.append(esc(word))
                elif word.startswith("-"):
                    comma = word.endswith(",")
                    parts.append("\\fB%s\\fR%s" % (esc(word.rstrip(",")), "," if comma else ""))
                elif word:
                    parts.append("\\fI%s\\fR" % esc(word))
            item = (" ".join(parts), [m.group(2)] if m.group(2) else [])
            continue
        if item:
            item[1].append(line.strip())
        elif line.startswith("  "):  # a note under a heading, not an option
            if not in_note:
                out.append(".PP")
            in_note = True
            out.append(esc(line.strip()))
    flush()
    return out, examples


def plugins_from_list(text):
    """--list-plugins as troff: .SS per plugin (eventers first), .TP per option."""
    blocks = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if (not lines or not re.match(r"(eventer|sink) \S+$", lines[0]) or
                lines[0] == "eventer auto"):  # the template says what auto is
            continue
        kind, name = lines[0].split()
        desc = lines[1].strip() if len(lines) > 1 and not lines[1].strip().startswith("-p ")\
            else ""
        opts, cur = [], None
        for line in lines[1:]:
            s = line.strip()
            if s.startswith("-p "):
                m = re.match(r"-p (\S+?)=<([^>]*)>(.*)$", s)
                cur = [m.group(1), m.group(2), m.group(3).strip(), []]
                opts.append(cur)
            elif cur:
                cur[3].append(s)
        blocks.append((0 if kind == "eventer" else 1, name, kind, desc, opts))
    out = []
    for _, name, kind, desc, opts in sorted(blocks):
        out.append('.SS "%s %s"' % (kind, name))
        out.append(esc(desc[0].upper() + desc[1:] + ("" if desc.endswith(".") else ".")
                       if desc else ""))
        if not opts:
            out.append(".PP\nNo options.")
        for key, typ, notes, helps in opts:
            out.append(".TP")
            out.append("\\fB\\-p %s=\\fR\\fI%s\\fR%s" % (esc(key), esc(typ),
                                                      "  " + esc(notes) if notes else ""))
            out.append(esc(" ".join(helps)))
    return out


def main():
    binary, version, plugindir, srcdir, out8, out7 = sys.argv[1:7]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch \
        else datetime.datetime.now(datetime.timezone.utc)
    date = when.strftime("%Y-%m-%d")
    # the build tree's plugin directories -> the installed one
    help_text = re.sub(r"directories\s*\(\S+;", "directory (%s;" % plugindir,
                       run(binary, "--help"))
    options, examples = options_from_help(help_text)
    plugins = plugins_from_list(run(binary, "--list-plugins"))
    example_lines = []
    for ex in examples:
        example_lines += [".PP", ".nf", ".RS 4", esc(ex), ".RE", ".fi"]
    for template, out, fill in (("tcp-audit.8.in", out8, {"@OPTIONS@": options,
                                                          "@EXAMPLES@": example_lines}),
                                ("tcp-audit-plugins.7.in", out7, {"@PLUGINS@": plugins})):
        with open(os.path.join(srcdir, template)) as f:
            text = f.read()
        text = text.replace("@VERSION@", version).replace("@DATE@", date)
        for key, lines in fill.items():
            text = text.replace(key + "\n", "".join(l + "\n" for l in lines if l != ""))
        with open(out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
