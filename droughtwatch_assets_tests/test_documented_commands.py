"""Every command the README and docs/ show in a code block parses as written: its program's own argument parser
(click for Dagster's and Dask's commands, argparse for `droughtwatch`) accepts it, and `make` has the target. A
command that parses may still fail for other reasons; this catches the commands that cannot work at all (a
sub-command or an option that does not exist, an argument a command does not take)."""

import importlib
import re
import shlex
from importlib.metadata import entry_points

import click
import pytest

from droughtwatch_assets_tests.conftest import REPO_ROOT

CLICK_PROGRAMS = ("dagster", "dagster-daemon", "dagster-webserver", "dagster-graphql", "dask", "dg")
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def code_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, with backslash continuations joined."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return "\n".join(lines).replace("\\\n", " ").splitlines()


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for each documented command of a program this checks; `VAR=value` prefixes and shell
    comments dropped, and each command of a `&&`, `;` or `|` chain on its own."""
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text()):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # prose or output in a code block, not a command
            command: list[str] = []
            for word in [*words, ";"]:
                if word in ("&&", ";", "|", "||"):
                    while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                        command = command[1:]
                    if command and command[0].split("/")[-1] in (*CLICK_PROGRAMS, "droughtwatch", "make"):
                        found.append((f"{page.name}: {line.strip()}", [command[0].split("/")[-1], *command[1:]]))
                    command = []
                else:
                    command.append(word)
    return found


def click_command(program: str) -> click.Command:
    """The program's click command: the `cli` group of its console script's module (Dask's top-level group has its
    sub-commands, such as `scheduler` and `worker`, added from `dask_cli` entry points, as `dask` does)."""
    if program == "dask":
        from dask.cli import cli

        for entry in entry_points(group="dask_cli"):
            if entry.name not in cli.commands:
                cli.add_command(entry.load(), entry.name)
        return cli
    [entry] = [e for e in entry_points(group="console_scripts") if e.name == program]
    return importlib.import_module(entry.module).cli


def parse_click(command: click.Command, name: str, args: list[str]) -> None:
    """Parses args as the program would, down to the leaf command, without running anything."""
    context = command.make_context(name, list(args))
    while isinstance(command, click.Group):
        rest = [*getattr(context, "_protected_args", []), *context.args]
        if not rest:
            return
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_each_kind_this_checks():
    programs = {argv[0] for _, argv in COMMANDS}
    assert {"dagster", "droughtwatch", "make", "dask"} <= programs


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where[:90] for where, _ in COMMANDS])
def test_a_documented_command_parses_as_written(where, argv):
    program, args = argv[0], argv[1:]
    if program == "make":
        makefile = (REPO_ROOT / "Makefile").read_text()
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        for target in targets:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"no make target {target!r}"
    elif program == "droughtwatch":
        from droughtwatch_assets.cli import build_parser

        try:
            build_parser().parse_args(args)
        except SystemExit as exit:
            pytest.fail(f"droughtwatch does not take {args} (exit {exit.code})")
    else:
        try:
            parse_click(click_command(program), program, args)
        except click.exceptions.Exit:
            pass  # --help or --version
        except click.ClickException as exc:
            pytest.fail(f"{program} does not take {args}: {exc.format_message()}")


def test_every_documented_postgres_url_names_the_driver_that_is_installed():
    urls = [
        (page.name, url)
        for page in PAGES
        for url in re.findall(r"postgres(?:ql)?(?:\+\w+)?://\S*", page.read_text())
        if "user" in url or "@" in url  # an example URL, not prose about the scheme
    ]
    assert urls, "no example URL found: the check reads the docs' example"
    for page, url in urls:
        assert url.startswith("postgresql+psycopg2://"), (
            f"{page}: {url} (SQLAlchemy reads a bare postgresql:// as psycopg 3)"
        )


def test_the_readmes_table_of_edges_is_the_asset_graph_and_both_diagrams_show_every_asset():
    from droughtwatch_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    real = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()
    }
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## The asset graph") :]
    table = {
        row[0]: set(re.findall(r"`(\w+)(?:\[[^\]]*\])?`", row[1]))
        for row in re.findall(r"^\| `(\w+)(?:\[set\])?` \| (.*) \|$", section, re.MULTILINE)
    }
    assert table == {asset: parents for asset, parents in real.items() if parents}
    for page in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "architecture.md"):
        text = page.read_text()
        diagram = text[text.index("## The asset graph") :].split("```")[1]
        assert set(real) <= set(re.findall(r"\w+", diagram)), page.name
