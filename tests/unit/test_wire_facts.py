"""One place for each wire fact, checked on the source with `ast`.

Frame types, frame-end, frame-min-size and reply codes are generated into
`minimq/codec/constants.py` from the AMQP XML; the framing bytes (protocol header, frame
header struct, frame-end octet) are built once in `codec/frames.py`; the basic property flags
are defined once in `codec/properties.py`; whether a reply code closes the channel or the
connection is the `HARD` attribute of its class in `codec/errors.py`. Everything else imports
them: a second copy is how the copies come to disagree (as `spec.SOFT_ERRORS` once did with
`errors.py` on 506).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from minimq.client import errors as client_errors
from minimq.codec import constants, errors, frames, properties
from minimq.codec.spec import METHODS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "minimq"
CONSTANTS = "minimq/codec/constants.py"
FRAMES = "minimq/codec/frames.py"
PROPERTIES = "minimq/codec/properties.py"

CONSTANT_NAMES = {name for name in vars(constants) if name.isupper()}
FLAG_NAMES = {name for name in vars(properties) if name.endswith("_FLAG") and not name.startswith("_")}
# Other protocol versions' headers, for the 0-8 / 0-9 answers RabbitMQ gives.
OTHER_HEADERS = "minimq/protocol/amqp08.py"


def sources() -> list[tuple[str, ast.AST]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


SOURCES = sources()


def assignments(tree: ast.AST):
    """(target name, value node, line) for every plain or annotated assignment to a name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for elt in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(elt, ast.Name):
                        yield elt.id, node.value, node.lineno
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            yield node.target.id, node.value, node.lineno


def is_literal_int(node: ast.AST) -> bool:
    """An int literal or a constant expression of them (`1 << 13`)."""
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.BinOp):
        return is_literal_int(node.left) and is_literal_int(node.right)
    return False


def test_the_xml_numbers_are_defined_only_in_constants():
    """FRAME_METHOD, FRAME_END, NOT_FOUND, ... are assigned in constants.py and nowhere else
    (spec.py re-exports them by import); no SOFT_ERRORS/HARD_ERRORS table competes with
    errors.py's classes."""
    found = []
    for rel, tree in SOURCES:
        if rel == CONSTANTS:
            continue
        for name, value, line in assignments(tree):
            bare = name.lstrip("_")
            if bare in CONSTANT_NAMES and not (rel == FRAMES and name == "FRAME_HEADER"):
                found.append(f"{rel}:{line} {name}")
            if bare in ("SOFT_ERRORS", "HARD_ERRORS"):
                found.append(f"{rel}:{line} {name}")
    assert not found, f"wire numbers defined outside {CONSTANTS}: {found}"


def test_reply_codes_are_never_literal_in_error_classes():
    """An error class takes its `code` from constants.py (0 means "no reply code")."""
    found = []
    for rel, tree in SOURCES:
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for name, value, line in assignments(ast.Module(body=node.body, type_ignores=[])):
                if name == "code" and is_literal_int(value) and ast.literal_eval(value) != 0:
                    found.append(f"{rel}:{line} {node.name}.code")
    assert not found, f"reply codes written as numbers: {found}"


def test_property_flags_are_defined_only_in_properties():
    """The 14 basic property flag bits live in codec/properties.py; the broker tests the raw
    header bytes with the same names imported."""
    found = []
    for rel, tree in SOURCES:
        if rel == PROPERTIES:
            continue
        for name, value, line in assignments(tree):
            wire_name = name.lstrip("_")
            if wire_name.startswith("F_") or wire_name in FLAG_NAMES:
                found.append(f"{rel}:{line} {name}")
            elif name.endswith("_FLAG") and is_literal_int(value):
                bit = ast.literal_eval(value)
                if bit in {1 << k for k in range(2, 16)}:
                    found.append(f"{rel}:{line} {name} = {bit:#x}")
    assert not found, f"property flags defined outside {PROPERTIES}: {found}"


def _bytes_constants(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            yield node.value, node.lineno


def _structs(tree: ast.AST, layout: str):
    """Lines that build a struct.Struct of this layout (">BHI": a frame header)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "Struct"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in (">" + layout, "!" + layout)
        ):
            yield node.lineno


def _frame_structs(tree: ast.AST):
    return _structs(tree, "BHI")


def test_framing_bytes_are_built_only_in_frames():
    """The frame-end octet, the 7-byte frame header struct and the 0-9-1 protocol header are
    made once, in codec/frames.py."""
    found = []
    for rel, tree in SOURCES:
        if rel == FRAMES:
            continue
        for value, line in _bytes_constants(tree):
            if value == b"\xce":
                found.append(f"{rel}:{line} frame-end {value!r}")
            if value.startswith(b"AMQP") and len(value) == 8 and not value.isalpha() and rel != OTHER_HEADERS:
                found.append(f"{rel}:{line} protocol header {value!r}")
        found += [f"{rel}:{line} frame header struct" for line in _frame_structs(tree)]
    assert not found, f"framing bytes built outside {FRAMES}: {found}"


def test_the_content_header_layout_is_defined_only_in_properties():
    """class id, weight, body size (">HHQ") and where the properties start (12) live in
    codec/properties.py; the assembler, the broker's Message and minimq.testing import them."""
    found = []
    for rel, tree in SOURCES:
        if rel == PROPERTIES:
            continue
        found += [f"{rel}:{line} content header struct" for line in _structs(tree, "HHQ")]
        for name, _value, line in assignments(tree):
            if name.lstrip("_") in ("PROPS_OFFSET", "PROPERTIES_OFFSET", "CONTENT_HEADER_SIZE"):
                found.append(f"{rel}:{line} {name}")
    assert not found, f"content header layout defined outside {PROPERTIES}: {found}"
    assert properties.CONTENT_HEADER.size == properties.PROPERTIES_OFFSET == 12
    assert properties.CONTENT_HEADER_SIZE == 14


def test_method_ids_are_not_written_as_bytes():
    """A hand-encoded frame starts from the generated class's ids
    (`spec.BasicDeliver.INDEX.to_bytes(4, "big")`), never from b"\\x00\\x3c\\x00\\x3c"."""
    found = []
    for rel, tree in SOURCES:
        if rel == "minimq/codec/spec.py":
            continue
        for value, line in _bytes_constants(tree):
            if len(value) >= 4 and int.from_bytes(value[:4], "big") in METHODS:
                found.append(f"{rel}:{line} {METHODS[int.from_bytes(value[:4], 'big')].NAME} {value!r}")
    assert not found, f"method ids written as bytes: {found}"


def test_the_framing_follows_the_numbers():
    assert frames.PROTOCOL_HEADER == b"AMQP\x00" + bytes(constants.PROTOCOL_VERSION) == b"AMQP\x00\x00\x09\x01"
    assert frames.FRAME_END_BYTE == bytes((constants.FRAME_END,)) == b"\xce"
    assert frames.HEARTBEAT_FRAME == bytes((constants.FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0xCE))


def test_property_flags_follow_the_property_order():
    """Flag bit 15 is the first property, bit 2 the fourteenth (AMQP 0-9-1 section 4.2.6.1)."""
    for i, name in enumerate(properties.PROPERTY_NAMES):
        assert getattr(properties, f"{name.upper()}_FLAG") == 1 << (15 - i), name
    assert len(FLAG_NAMES) == len(properties.PROPERTY_NAMES)


@pytest.mark.parametrize("code", sorted(errors.ERRORS_BY_CODE))
def test_the_client_families_follow_the_broker_classes(code):
    """A code the broker closes the channel with is a ChannelClosed in the client, one it
    closes the connection with a ConnectionClosed: both read the same classification."""
    hard = errors.ERRORS_BY_CODE[code].HARD
    if hard:
        err = client_errors.connection_error(code, "x")
        assert isinstance(err, client_errors.ConnectionClosed) and type(err) is not client_errors.ConnectionClosed
    else:
        err = client_errors.channel_error(code, "x")
        assert isinstance(err, client_errors.ChannelClosed) and type(err) is not client_errors.ChannelClosed
    assert err.code == code


def test_the_rule_catches_a_copy():
    """The checks above find what they look for (so a pass means something)."""
    copy = ast.parse(
        "FRAME_END = 206\n"
        "_END = b'\\xce'\n"
        "_FRAME = struct.Struct('>BHI')\n"
        "HEADER = b'AMQP\\x00\\x00\\x09\\x01'\n"
        "_USER_ID_FLAG = 1 << 4\n"
        "_DELIVER = b'\\x00\\x3c\\x00\\x3c'\n"
        "class E:\n    code = 506\n"
    )
    names = [name for name, _value, _line in assignments(copy)]
    assert "FRAME_END" in names and "_USER_ID_FLAG" in names
    assert {v for v, _ in _bytes_constants(copy)} == {b"\xce", b"AMQP\x00\x00\x09\x01", b"\x00\x3c\x00\x3c"}
    assert METHODS[int.from_bytes(b"\x00\x3c\x00\x3c", "big")].NAME == "basic.deliver"
    assert list(_frame_structs(copy)) == [3]
    cls = next(n for n in ast.walk(copy) if isinstance(n, ast.ClassDef))
    assert [(n, ast.literal_eval(v)) for n, v, _ in assignments(ast.Module(body=cls.body, type_ignores=[]))] == [("code", 506)]
