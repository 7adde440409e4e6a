"""``tunegate completion bash|zsh|fish``: a shell completion script written from the parser itself, so it knows
every command, action and option the installed version has (and needs nothing installed beside the shell)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Level:
    """One command's place in the tree ('tunegate alias set'): its sub-commands, options and their choices."""

    path: str
    commands: dict[str, str] = field(default_factory=dict)  # name → help
    options: dict[str, str] = field(default_factory=dict)  # --long or -s → help
    takes_value: set[str] = field(default_factory=set)
    choices: dict[str, list[str]] = field(default_factory=dict)  # option → its values
    values: list[str] = field(default_factory=list)  # the choices of a positional argument


def levels(parser: argparse.ArgumentParser, path: str = "tunegate") -> Iterator[Level]:
    level = Level(path)
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, child in action.choices.items():
                level.commands[name] = helps.get(name, "")
                children.append((name, child))
        elif action.option_strings and action.help != argparse.SUPPRESS:
            for option in action.option_strings:
                level.options[option] = action.help or ""
                if action.nargs != 0:
                    level.takes_value.add(option)
                if action.choices is not None:
                    level.choices[option] = [str(choice) for choice in action.choices]
        elif action.choices is not None:  # a positional argument with choices: offered as words, like commands
            level.values += [str(choice) for choice in action.choices]
    yield level
    for name, child in children:
        yield from levels(child, f"{path} {name}")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    tree = list(levels(parser))
    return _fish(tree) if shell == "fish" else _bash(tree, zsh=shell == "zsh")


def _bash(tree: list[Level], *, zsh: bool) -> str:
    commands = "\n".join(f'        "{lv.path}") echo "{" ".join(lv.commands)}" ;;' for lv in tree if lv.commands)
    words = "\n".join(
        f'        "{lv.path}") echo "{" ".join([*lv.commands, *lv.values, *lv.options])}" ;;' for lv in tree
    )
    values = "\n".join(
        f'        "{lv.path}|{option}") echo "{" ".join(choices)}" ;;'
        for lv in tree
        for option, choices in lv.choices.items()
    )
    takes = "\n".join(
        f'        "{lv.path}|{option}") return 0 ;;'
        for lv in tree
        for option in sorted(lv.takes_value - set(lv.choices))
    )
    head = '#compdef tunegate\n# zsh completion for tunegate: eval "$(tunegate completion zsh)"\n'
    head += "autoload -U +X bashcompinit && bashcompinit\n" if zsh else ""
    if not zsh:
        head = '# bash completion for tunegate: eval "$(tunegate completion bash)"\n'
    return f"""{head}_tunegate_commands() {{
    case "$1" in
{commands}
    esac
}}
_tunegate_words() {{
    case "$1" in
{words}
    esac
}}
_tunegate_values() {{
    case "$1" in
{values}
    esac
}}
_tunegate_takes_value() {{
    case "$1" in
{takes}
    esac
    return 1
}}
_tunegate() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path="tunegate" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case " $(_tunegate_commands "$path") " in
            *" $word "*) path="$path $word" ;;
        esac
    done
    local values
    values="$(_tunegate_values "$path|$prev")"
    if [[ -n "$values" ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif _tunegate_takes_value "$path|$prev"; then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_tunegate_words "$path")" -- "$cur"))
    fi
}}
complete -o default -F _tunegate tunegate
"""


def _quote(text: str) -> str:
    text = text.replace("%%", "%")  # argparse's escape
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(tree: list[Level]) -> str:
    lines = [
        "# fish completion for tunegate: tunegate completion fish | source",
        "function __tunegate_commands",
        "    switch $argv[1]",
    ]
    for lv in tree:
        if lv.commands:
            lines += [f"        case {_quote(lv.path)}", f"            printf '%s\\n' {' '.join(lv.commands)}"]
    lines += [
        "    end",
        "end",
        "function __tunegate_path",
        "    set -l path tunegate",
        "    for word in (commandline -opc)[2..-1]",
        '        if contains -- $word (__tunegate_commands "$path")',
        '            set path "$path $word"',
        "        end",
        "    end",
        '    echo "$path"',
        "end",
    ]
    for lv in tree:
        condition = f"-n \"test (__tunegate_path) = '{lv.path}'\""
        for name, text in lv.commands.items():
            lines.append(f"complete -c tunegate -f {condition} -a {name} -d {_quote(text)}")
        if lv.values:
            lines.append(f"complete -c tunegate -f {condition} -a {_quote(' '.join(lv.values))}")
        for option, text in lv.options.items():
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            value = ""
            if option in lv.choices:
                value = f" -x -a {_quote(' '.join(lv.choices[option]))}"
            elif option in lv.takes_value:
                value = " -r"
            lines.append(f"complete -c tunegate {condition} {flag}{value} -d {_quote(text)}")
    return "\n".join(lines) + "\n"
