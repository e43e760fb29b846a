"""READMEs become the sections and sentences search ranks, read as CommonMark reads them."""

from __future__ import annotations

from meshkit.domain.passages import Section, clean_markdown, markdown_sections


def headings(text: str) -> list[str]:
    return [s.heading for s in markdown_sections(text, "README")]


def test_a_fence_closes_only_on_its_own_kind() -> None:
    text = (
        "# Build\n\nThe build needs a recent compiler.\n\n"
        "```sh\nmake\n~~~\n# not a heading: still inside the backtick fence\n```\n\n"
        "After the fence comes text that must be kept.\n\n"
        "~~~\n```\n## nor is this one\n~~~\n\n"
        "And text after the tilde fence too.\n"
    )

    [section] = markdown_sections(text, "README")

    assert section == Section(
        "README",
        "Build",
        "The build needs a recent compiler.\n\n"
        "After the fence comes text that must be kept.\n\n"
        "And text after the tilde fence too.",
    )


def test_indented_code_is_dropped_and_its_hash_lines_are_no_headings() -> None:
    text = (
        "## Setup\n\nInstall the tool, then run it once:\n\n"
        "    pip install tool\n    # configure it\n    tool init\n\n"
        "The first run writes a config file.\n"
    )

    sections = markdown_sections(text, "README")

    assert headings(text) == ["Setup"]
    assert sections[0].text == (
        "Install the tool, then run it once:\n\nThe first run writes a config file."
    )


def test_a_hash_inside_inline_code_or_mid_line_is_text() -> None:
    text = "Prefix comments with `# note` in the file, # not a heading either.\n"

    assert headings(text) == [""]
    assert clean_markdown(text) == text.strip().replace("`", "")


def test_setext_headings_split_sections_like_atx_ones() -> None:
    text = (
        "Tidepool\n========\n\nPredicts tides for any harbour.\n\n"
        "Usage from the\ncommand line\n-----\n\nRun it with the station name as argument.\n\n"
        "---\n\nA rule is no heading: this stays under Usage.\n"
    )

    sections = markdown_sections(text, "README")

    assert [s.heading for s in sections] == ["Tidepool", "Usage from the command line"]
    assert sections[0].text == "Predicts tides for any harbour."
    assert sections[1].text == (
        "Run it with the station name as argument.\n\nA rule is no heading: this stays under Usage."
    )


def test_inline_markup_becomes_plain_text() -> None:
    text = (
        "![build status](https://ci.example/badge.svg) See the **[guide](docs/guide.md)** "
        "and <kbd>Ctrl</kbd>+<kbd>C</kbd>; events go to `sensors/<id>/state` &amp; logs.\n\n"
        "<!-- a comment\nover two lines -->\n"
    )

    assert clean_markdown(text) == (
        "build status See the guide and Ctrl + C ; events go to sensors/<id>/state & logs."
    )


def test_lists_and_tables_are_clauses_of_their_paragraph() -> None:
    text = (
        "Features:\n- fast\n- small,\n  and documented\n\n"
        "| Board | Chip |\n|---|---|\n| Feather | ESP32 |\n| Pico | RP2040 |\n"
    )

    assert clean_markdown(text) == (
        "Features: fast; small, and documented\n\nBoard, Chip\n\nFeather, ESP32; Pico, RP2040"
    )
