"""One way every benchmark prints its figures: a two-column table."""


def print_table(rows: list[tuple[str, str]], title: str | None = None) -> None:
    width = max([len(figure) for figure, _ in rows] + [40])
    if title:
        print(title)
    print(f"{'figure':<{width}}  {'value':>12}")
    for figure, value in rows:
        print(f"{figure:<{width}}  {value:>12}")
