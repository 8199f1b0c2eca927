"""aihf/commandline.py: what every command's error line is made of."""

from aihf.commandline import one_line


def test_one_line_joins_lines_and_escapes_other_control_characters():
    assert one_line("bad row\n  field 'x': missing\n") == "bad row field 'x': missing"
    assert one_line("file a\rb.jsonl: \x1b[31mred\t") == "file a\\rb.jsonl: \\x1b[31mred"
    assert one_line("two  spaces kept") == "two  spaces kept"
