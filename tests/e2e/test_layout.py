"""The code's shape: parts that stand alone import nothing of each other."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_simulator_imports_nothing_of_the_runner_but_the_shared_module() -> None:
    files = sorted((ROOT / "runner" / "simulator").glob("*.py"))
    assert len(files) > 10
    for path in files:
        for module in _imports(path):
            if module == "runner" or module.startswith("runner."):
                assert module.startswith(("runner.simulator", "runner.shared")), f"{path.name} imports {module}"


SQL_START = re.compile(
    r"^\s*(select|insert|update|delete|create|drop|alter|grant|revoke|call|copy|with|do|set|truncate)\b",
    re.IGNORECASE,
)


def _text(node: ast.AST) -> str:
    """The literal text an f-string, `%` or `.format` expression starts with."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def sql_built_from_strings(source: str) -> list[int]:
    """Lines where SQL text is assembled with an f-string, `%` or str.format (psycopg's sql composition and
    parameters are the way); text only printed for people (print) is not SQL sent anywhere."""
    tree = ast.parse(source)
    printed = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
               for a in ast.walk(n)}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        built = None
        if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
            built = node
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
            built = node.left
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
              and isinstance(node.func.value, ast.Constant)):  # fmt: skip
            built = node.func.value
        if built is not None and id(node) not in printed and SQL_START.match(_text(built)):
            found.append(node.lineno)
    return found


def test_no_sql_is_assembled_from_strings() -> None:
    assert sql_built_from_strings('db.execute(f"select * from {table}")') == [1]  # the check itself can fail
    assert sql_built_from_strings('db.execute("delete from %s" % table)') == [1]
    assert sql_built_from_strings('q = "update t set {} = 1".format(name)') == [1]
    assert sql_built_from_strings('print(f"select bulk_sync.tick();  -> {n}")') == []
    assert sql_built_from_strings('db.execute(sql.SQL("select * from {}").format(sql.Identifier(t)))') == []
    offenders = {}
    for folder in ("runner", "bench", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if lines := sql_built_from_strings(path.read_text()):
                offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}


def _where_things_are() -> list[tuple[str, str]]:
    """The README's table of where things are: (first column, second column) per row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [(cells[0], cells[1]) for cells in rows]


def test_the_readme_names_only_files_that_exist_and_every_module() -> None:
    named: set[Path] = set()
    rows = _where_things_are()
    assert len(rows) > 15
    for first, second in rows:
        places = [ROOT / p for p in re.findall(r"`([^`]+)`", first)]
        for place in places:
            assert place.exists(), f"README names {place.relative_to(ROOT)}, which does not exist"
            named.add(place)
        if len(places) == 1 and places[0].is_dir():  # a folder's row names files inside it
            for name in re.findall(r"`([\w./-]+\.(?:py|sql|graphql|sh))`", second):
                assert (places[0] / name).exists(), f"README names {places[0].relative_to(ROOT)}/{name}"
                named.add(places[0] / name)
    modules = [*(ROOT / "runner").glob("*.py"), *(ROOT / "runner" / "simulator").glob("*.py"),
               *(ROOT / "sql").glob("*.sql")]  # fmt: skip
    unnamed = [str(m.relative_to(ROOT)) for m in modules if m not in named and m.name != "__init__.py"]
    assert unnamed == [], f"README does not say where these are: {unnamed}"
