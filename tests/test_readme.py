"""What the README says about the command line is what the `t2arec` command does."""
import re

import pytest

from declared_deps import ROOT
from t2arec_fast.cli import build_parser, command_parsers

OVERRIDES = "--key"        # the README's `--key=value ...`: any config key, not a parser option


def readme_cli_block() -> dict:
    """{command: set of --options} from the README's Command line block (continuation lines are indented)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line\n\n```\n", 1)[1].split("```\n", 1)[0]
    commands, current = {}, None
    for line in block.splitlines():
        usage = line.split("#", 1)[0]
        if line.startswith("t2arec "):
            words = usage.split()
            current = " ".join(words[1:3] if words[1] == "data" else words[1:2])
            commands[current] = set()
        commands[current] |= set(re.findall(r"--[a-z][\w-]*", usage)) - {OVERRIDES}
    return commands


def parser_commands() -> dict:
    """{command: set of --options} from the real argument parser."""
    def options(parser):
        return {o for action in parser._actions for o in action.option_strings if o.startswith("--")} - {"--help"}

    found = {}
    for name, sub in command_parsers(build_parser()).items():
        nested = command_parsers(sub)
        for child_name, child in (nested.items() if nested else [(None, sub)]):
            found[f"{name} {child_name}" if child_name else name] = options(child)
    return found


def test_readme_lists_every_command():
    assert set(readme_cli_block()) == set(parser_commands())


@pytest.mark.parametrize("command", sorted(parser_commands()))
def test_readme_options_are_the_commands_options(command):
    readme, real = readme_cli_block()[command], parser_commands()[command]
    assert not readme - real, f"README shows options `t2arec {command}` does not have: {sorted(readme - real)}"
    assert not real - readme, f"README's Command line block misses `t2arec {command}` options: {sorted(real - readme)}"


def test_demo_help_describes_what_the_demo_does(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for step in ("synthetic interest-shift data set", "pre-train", "test-time alignment", "export T2ARec to ONNX",
                 "online recommender"):
        assert step in text
