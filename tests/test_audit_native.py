"""The native accelerator (custdata.audit._native) agrees with the pure-Python chain.

Every test that verifies or seals runs on both implementations in one run of the
suite (the ``impl`` fixture swaps :data:`custdata.audit._accel.native`); the
native case is skipped where the extension was not built. The environment
variable that forces the pure-Python code is tested in subprocesses.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import types
import uuid

from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, decision
from custdata._accel import load
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    MemorySink,
    _accel,
    _chain,
    _compact,
    _keys,
    _store,
    native_enabled,
    redact,
    verify_trail,
)


NATIVE = _accel.native
VECTORS = Path(__file__).parent / "vectors"
VECTOR_KEYS = FakeKeys("audit-1", seed=bytes(range(32)))
VECTOR_VERIFIERS = {
    1: "test.example/audit-v1+d1c620cb+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X",
    2: "test.example/audit-v2+526e73b3+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X",
}
needs_native = pytest.mark.skipif(
    NATIVE is None, reason="the native accelerator is not built here"
)
IMPLS = ["pure", pytest.param("native", marks=needs_native)]


def _use(impl: str) -> Any:
    return None if impl == "pure" else NATIVE


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(_accel, "native", _use(request.param))
    return str(request.param)


def _report_both(run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run *run* (a verification) on the pure-Python path, then the native one."""
    saved = _accel.native
    try:
        _accel.native = None
        pure = run().to_dict()
        _accel.native = NATIVE
        native = run().to_dict()
    finally:
        _accel.native = saved
    return pure, native


# -- known-answer vectors -----------------------------------------------------


class TestVectors:
    @pytest.mark.parametrize("version", [1, 2])
    def test_vectors_verify(self, impl: str, version: int) -> None:
        """The stored v1 and v2 vectors verify intact on either implementation."""
        suffix = f"_v{version}"
        report = verify_trail(
            JsonLinesSource(VECTORS / f"audit_trail{suffix}.jsonl"),
            VECTOR_KEYS,
            checkpoints=FileAnchor(VECTORS / f"audit_trail{suffix}.anchor.jsonl"),
            verifier=CheckpointVerifier(VECTOR_VERIFIERS[version]),
        )
        assert report.intact, report.kinds()
        assert report.events > 0
        assert report.checkpoints > 0


# -- sealing --------------------------------------------------------------------


def _writer(monkeypatch: pytest.MonkeyPatch, impl: str) -> _chain.ChainWriter:
    monkeypatch.setattr(_accel, "native", _use(impl))
    monkeypatch.setattr(
        _chain.uuid, "uuid4", lambda: uuid.UUID("12345678-1234-5678-1234-567812345678")
    )
    return _chain.ChainWriter(VECTOR_KEYS, deployment="dep", service="svc")


def test_a_stale_build_is_not_used() -> None:
    """An extension built from an older source (a function missing) is refused."""
    full = types.SimpleNamespace(**dict.fromkeys(_accel._REQUIRED, object()))
    assert _accel._usable(full)  # type: ignore[arg-type]
    del full.fill
    assert not _accel._usable(full)  # type: ignore[arg-type]
    if NATIVE is not None:
        assert _accel._usable(NATIVE)


class TestSeal:
    @needs_native
    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=30))
    def test_native_seal_equals_pure(self, bodies: list[bytes]) -> None:
        """The same keys and bodies give the same records (digest, MAC, prev) and lines."""
        with pytest.MonkeyPatch.context() as mp:
            pure = _writer(mp, "pure")
            native = _writer(mp, "native")
        assert native._sealer is not None
        assert pure._sealer is None
        for body in bodies:
            a, b = pure.prepare(body, {}), native.prepare(body, {})
            assert (a.seq, a.prev, a.mac, a.body_sha256) == (
                b.seq,
                b.prev,
                b.mac,
                b.body_sha256,
            )
            assert _chain.render_line(a) == _chain.render_line(b)
            assert a.body_sha256 == hashlib.sha256(body).digest()
            pure.commit(a)
            native.commit(b)

    @needs_native
    def test_native_mac_is_the_formula(self) -> None:
        """The native step is compute_mac, the module docstring's formula."""
        key, prev, digest = os.urandom(32), os.urandom(32), os.urandom(32)
        prefix = _chain.mac_prefix("a/b/c", "k-1")
        assert NATIVE is not None
        assert NATIVE.step(key, prefix, 7, prev, digest) == _chain.compute_mac(
            key, "a/b/c", "k-1", 7, prev, digest
        )

    @pytest.mark.parametrize("version", [1, 2])
    def test_sinks_write_the_same_lines(
        self, monkeypatch: pytest.MonkeyPatch, version: int, tmp_path: Path
    ) -> None:
        """A sink writes byte-identical lines from native and pure records."""
        if NATIVE is None:
            pytest.skip("the native accelerator is not built here")
        out = {}
        for impl in ("pure", "native"):
            writer = _writer(monkeypatch, impl)
            path = tmp_path / f"{impl}.jsonl"
            sink = JsonLinesSink(path, version=version)
            for i in range(5):
                body = json.dumps({"action": "x", "n": i}).encode()
                record = writer.prepare(body, {"action": "x", "n": i})
                sink.reserve()
                sink.emit(record)
                writer.commit(record)
            sink.close()
            out[impl] = path.read_bytes()
        assert out["pure"] == out["native"]
        assert out["pure"].count(b"\n") >= 5

    @needs_native
    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(
        events=st.lists(
            st.tuples(
                st.integers(min_value=-(2**63), max_value=2**63 - 1),
                st.none() | st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True),
                st.none() | st.from_regex(r"[a-f0-9]{8,32}", fullmatch=True),
                st.integers(min_value=1, max_value=3),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def test_native_lines_equal_pure_lines(
        self, events: list[tuple[int, str | None, str | None, int]]
    ) -> None:
        """Decision records render to the same v1 and v2 lines natively and in Python."""
        sink = MemorySink()
        with AuditTrail(FakeKeys(), sinks=[sink], checkpoint_interval=None) as t:
            for count, rid, tid, n in events:
                subjects = tuple(f"c-{k}" for k in range(n))
                t.record_decision(
                    decision(
                        "u-1",
                        subjects=subjects,
                        count=count,
                        request_id=rid,
                        trace_id=tid,
                    ),
                    now=T0,
                )
        records = sink.records
        fast, slow = _compact.CompactWriter(), _compact.CompactWriter()
        assert fast._native is NATIVE
        slow._native = None
        for record in records:
            line = fast.render(record)
            assert line == slow.render(record)
            fast.written()
            slow.written()
            fmt = _chain.line_format(record.chain, record.key_ref)
            head, mid = _chain.line_parts(fmt)
            assert NATIVE.v1_line(
                head,
                record.seq,
                mid,
                record.prev,
                record.mac,
                record.body_sha256,
                record.body,
            ) == _chain.render_line(record)

    @needs_native
    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(
        texts=st.lists(st.binary(max_size=20), min_size=1, max_size=8),
        values=st.lists(st.binary(max_size=12), max_size=9),
    )
    def test_native_v2_body_equals_pure(
        self, texts: list[bytes], values: list[bytes]
    ) -> None:
        """The native fill of a compact record is the reader's, or None when it cannot fit."""
        assert NATIVE is not None
        parts: list[bytes] = []
        for text in texts:
            parts += (text, b"")
        parts = parts[:-1]
        joined = b",".join(values)
        got = NATIVE.v2_body(parts, joined, _compact.DerivedDigest)
        pieces = joined.split(b",")
        if len(pieces) * 2 + 1 != len(parts):
            assert got is None
            return
        filled = parts.copy()
        filled[1::2] = pieces
        body = b"".join(filled)
        assert got is not None
        assert got == (body, hashlib.sha256(body).digest())
        assert type(got[1]) is _compact.DerivedDigest

    def test_compact_reader_reads_the_same_records(
        self, impl: str, tmp_path: Path
    ) -> None:
        """The format-2 reader gives the same records on both implementations."""
        path = tmp_path / "audit.jsonl"
        with AuditTrail(
            FakeKeys(), sinks=[JsonLinesSink(path, version=2)], checkpoint_interval=None
        ) as t:
            for i in range(6):
                t.record_decision(
                    decision("u-1", subjects=tuple(f"c-{k}" for k in range(i % 3 + 1))),
                    now=T0,
                )
        lines = path.read_bytes().splitlines()
        reader = _compact.CompactReader()
        assert (reader._native is not None) == (impl == "native")
        plain = _compact.CompactReader()
        plain._native = None
        records = [reader.feed(line) for line in lines]
        assert records == [plain.feed(line) for line in lines]
        assert sum(r is not None for r in records) == 8  # start, 6 decisions, end

    @needs_native
    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(
        texts=st.lists(st.text(max_size=12), min_size=1, max_size=8),
        pool=st.lists(
            st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=10),
            min_size=8,
            max_size=8,
        ),
    )
    def test_native_fill_equals_the_body_format(
        self, texts: list[str], pool: list[int | str]
    ) -> None:
        """The native fill of a decision body is the template's %-format, encoded."""
        assert NATIVE is not None
        values = tuple(pool[: len(texts) - 1])
        fmt = "%s".join(t.replace("%", "%%") for t in texts)
        expected = (fmt % values).encode("utf-8", "surrogatepass")
        got = NATIVE.fill(
            tuple(t.encode("utf-8", "surrogatepass") for t in texts), values
        )
        if any(isinstance(v, str) and not v.isascii() for v in values) and got is None:
            return  # a str that is not valid UTF-8 (a lone surrogate) is left to Python
        assert got == expected
        assert NATIVE.fill((b"a", b"b"), (3.5,)) is None
        assert NATIVE.fill((b"a", b"b"), (2**64,)) is None
        assert NATIVE.fill((b"a",), (1,)) is None

    @needs_native
    def test_native_v2_line_leaves_other_values_to_python(self) -> None:
        """A value the native renderer does not write gives None, not a wrong line."""
        assert NATIVE is not None
        mac = bytes(range(32))
        args = (b'{"@":"0123456789ab","s":', 7, mac, b'","t":1,"d":[')
        assert NATIVE.v2_line(*args, (3, "x"), b"\x00\x01") == (
            b'{"@":"0123456789ab","s":7,"m":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
            b'"t":1,"d":[3,"x"]}\n'
        )
        assert NATIVE.v2_line(*args, (3.5, "x"), b"\x00\x01") is None
        assert NATIVE.v2_line(*args, (2**64, "x"), b"\x00\x01") is None
        assert NATIVE.v2_line(*args, [3, "x"], b"\x00\x01") is None
        assert NATIVE.v2_line(*args, (3,), b"\x00\x01") is None
        with pytest.raises(ValueError, match="mac"):
            NATIVE.v2_line(args[0], 7, b"short", args[3], (3,), b"\x00")

    def test_trail_seals_through_the_chosen_implementation(
        self, impl: str, tmp_path: Path
    ) -> None:
        """AuditTrail seals on either implementation, and its file verifies on both."""
        keys = FakeKeys()
        path = tmp_path / "audit.jsonl"
        with AuditTrail(
            keys, sinks=[JsonLinesSink(path)], checkpoint_interval=None
        ) as t:
            for i in range(20):
                t.record_decision(decision(f"u-{i % 3}"), now=T0)
            writer = t._writer
            assert writer is not None
            assert (writer._sealer is not None) == (impl == "native")
        pure, native = _report_both(lambda: verify_trail(JsonLinesSource(path), keys))
        assert pure == native
        assert pure["intact"]

    def test_a_copied_writer_is_independent(self, impl: str) -> None:
        """A copy (a forked writer) seals like the original, without sharing its key state."""
        writer = _chain.ChainWriter(VECTOR_KEYS, deployment="d", service="s")
        first = writer.prepare(b"{}", {})
        writer.commit(first)
        twin = copy.copy(writer)
        a = writer.prepare(b'{"a":1}', {})
        writer.commit(a)
        b = twin.prepare(b'{"a":1}', {})
        assert a.mac == b.mac
        twin.commit(b)
        assert writer.prepare(b"{}", {}).mac == twin.prepare(b"{}", {}).mac


# -- the chain key never shows --------------------------------------------------


@needs_native
class TestCanary:
    def test_the_key_is_in_no_repr_str_or_error(self) -> None:
        """Canary bytes used as the chain key appear in nothing the sealer shows."""
        assert NATIVE is not None
        canary = b"CANARY-KEY-0123456789abcdefghij!"
        assert 32 == len(canary)
        sealer = NATIVE.Sealer(canary, b"prefix\x00", _keys._EVOLVE_LABEL)
        shown = [repr(sealer), str(sealer), repr(copy.copy(sealer))]
        for bad in (
            lambda: sealer.seal(1, b"short", b"{}"),
            lambda: sealer.seal(-1, bytes(32), b"{}"),
            lambda: sealer.seal(1, bytes(32)),  # type: ignore[call-arg]
            lambda: pickle.dumps(sealer),
            lambda: NATIVE.Sealer(canary[:31], b"p", b"l"),
            lambda: NATIVE.step(canary, b"p", 1, bytes(31), bytes(32)),
        ):
            with pytest.raises((TypeError, ValueError, OverflowError)) as info:
                bad()
            shown += [str(info.value), repr(info.value)]
        text = "\n".join(shown)
        for form in (canary.decode(), canary.hex(), repr(canary), "CANARY"):
            assert form not in text

    def test_the_writer_holds_no_key_in_python(self) -> None:
        """With the extension, the chain key lives in the sealer alone."""
        with pytest.MonkeyPatch.context() as mp:
            writer = _writer(mp, "native")
            pure = _writer(mp, "pure")
        key = pure._key
        assert 32 == len(key)
        assert writer._key == b""
        state = repr(writer) + repr(vars(writer))
        assert key.hex() not in state
        assert repr(key) not in state


# -- the fallback -----------------------------------------------------------------


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != _accel.PURE_PYTHON_ENV}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=environ,
    ).stdout.strip()


_VERIFY_VECTORS = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from audit_fixtures import FakeKeys
from custdata.audit import JsonLinesSource, native_enabled, verify_trail
keys = FakeKeys("audit-1", seed=bytes(range(32)))
reports = [
    verify_trail(JsonLinesSource({str(VECTORS)!r} + f"/audit_trail{{s}}.jsonl"), keys)
    for s in ("_v1", "_v2")
]
print(native_enabled(), all(r.intact for r in reports))
"""


class TestFallback:
    @pytest.mark.parametrize("value", ["1", "yes"])
    def test_the_env_var_forces_pure_python(self, value: str) -> None:
        """CUSTDATA_PURE_PYTHON=1 (read at import) runs the pure-Python chain, which verifies."""
        assert "False True" == _python(_VERIFY_VECTORS, CUSTDATA_PURE_PYTHON=value)

    @pytest.mark.parametrize("value", ["", "0"])
    def test_unset_uses_the_extension_when_built(self, value: str) -> None:
        """Without the variable (or with 0) the extension runs whenever it was built."""
        # Built or not (the suite itself may run with the variable set).
        built = importlib.util.find_spec("custdata.audit._native") is not None
        expected = f"{built} True"
        assert expected == _python(_VERIFY_VECTORS, CUSTDATA_PURE_PYTHON=value)

    def test_a_missing_extension_means_pure_python(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An extension that cannot be imported is not an error: the pure code runs."""
        monkeypatch.delenv(_accel.PURE_PYTHON_ENV, raising=False)
        monkeypatch.setitem(sys.modules, "custdata.audit._native", None)
        monkeypatch.delattr(sys.modules["custdata.audit"], "_native", raising=False)
        assert load("custdata.audit._native", _accel._REQUIRED) is None
        monkeypatch.setattr(_accel, "native", None)
        assert not native_enabled()
        keys = FakeKeys()
        path = tmp_path / "a.jsonl"
        with AuditTrail(
            keys, sinks=[JsonLinesSink(path)], checkpoint_interval=None
        ) as t:
            t.record_decision(decision("u-1"), now=T0)
        assert verify_trail(JsonLinesSource(path), keys).intact

    def test_native_enabled_reports_the_module(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """native_enabled() is exactly whether the extension module is in use."""
        monkeypatch.setattr(_accel, "native", None)
        assert native_enabled() is False
        if NATIVE is not None:
            monkeypatch.setattr(_accel, "native", NATIVE)
            assert native_enabled() is True


# -- the block reader the native runs read from ------------------------------------


class TestBlockLines:
    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(
        data=st.lists(
            st.sampled_from([b"a", b"bb", b"\n", b"x" * 9, b"\n\n", b"{}", b"y" * 30]),
            max_size=40,
        ).map(b"".join),
        block=st.integers(1, 16),
        max_line=st.integers(1, 20),
    )
    def test_same_lines_as_the_plain_reader(
        self, data: bytes, block: int, max_line: int
    ) -> None:
        """_block_lines yields exactly what _lines yields (classes too), for any blocks."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.jsonl"
            path.write_bytes(data)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(_store, "_BLOCK", block)
                mp.setattr(_store, "MAX_LINE", max_line)
                source = JsonLinesSource(path)
                plain = [(type(x), bytes(x)) for x in source._lines()]
                cursor = _store.LineCursor()
                blocks = [(type(x), bytes(x)) for x in source._block_lines(cursor)]
        assert plain == blocks


# -- verification: the same report on both implementations --------------------------


class Scene:
    """Trails in format 1, format 2 and both mixed, with templates, lists and redactions."""

    def __init__(self, folder: Path, version: int | None) -> None:
        self.keys = FakeKeys(seed=bytes(range(1, 33)))
        self.signer = CheckpointSigner.generate("example.com/audit")
        self.path = folder / f"audit-{version}.jsonl"
        self.anchor = FileAnchor(folder / f"anchor-{version}.jsonl")
        checkpointer = Checkpointer(
            JsonLinesSource(self.path), self.signer, self.anchor
        )
        versions = [1, 2, 1] if version is None else [version] * 3
        trails = [
            AuditTrail(
                self.keys,
                sinks=[JsonLinesSink(self.path, version=v)],
                checkpointer=checkpointer if n == 0 else None,
                checkpoint_interval=None,
                service=f"svc{n}",
            )
            for n, v in enumerate(versions)
        ]
        at = T0
        # A long run of one chain (the native runs), then interleaved chains
        # with several decision shapes (templates), lists and commas in values.
        for i in range(60):
            at += dt.timedelta(seconds=1)
            trails[0].record_decision(
                decision(f"u-{i % 3}", subjects=(f"c-{i}",), request_id=f"r-{i}"),
                now=at,
            )
        for i in range(40):
            at += dt.timedelta(seconds=1)
            n = i % 3
            subjects = (f"c-{i}", f"d-{i}") if i % 5 == 0 else (f"c-{i}",)
            trails[n].record_decision(
                decision(
                    f"u,{i % 2}" if i % 7 == 0 else f"u-{i}",
                    subjects=subjects,
                    purpose="support" if i % 4 else "billing",
                ),
                now=at,
            )
            if i % 13 == 12:
                trails[0].checkpoint(now=at)
        chain = trails[1].chain
        assert chain is not None
        before = self.path.read_bytes()
        redact(
            trails[0],
            JsonLinesSource(self.path),
            chain=chain,
            seq=3,
            reason="erasure_request",
            actor="dpo-1",
            now=at,
        )
        for i in range(30):
            at += dt.timedelta(seconds=1)
            trails[2].record_decision(decision("u-z", subjects=(f"z-{i}",)), now=at)
        trails[0].checkpoint(now=at)
        for trail in trails:
            trail.close(now=at + dt.timedelta(seconds=1))
        self.data = self.path.read_bytes()
        # The same trail with the redacted body put back: the redaction event
        # stays, an ordinary record the one-pass check accepts.
        self.claimed = before + self.data.split(b"\n", before.count(b"\n"))[-1]

    def report(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        self.path.write_bytes(data)
        return _report_both(
            lambda: verify_trail(
                JsonLinesSource(self.path),
                self.keys,
                checkpoints=self.anchor,
                verifier=CheckpointVerifier(self.signer.verifier_key),
            )
        )


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Scene]:
    folder = tmp_path_factory.mktemp("native")
    return {v: Scene(folder, v) for v in (1, 2, None)}


def _tamper(data: bytes, kind: str, a: int, b: int) -> bytes:
    lines = data.split(b"\n")[:-1]
    if not lines:
        return data
    i, j = a % len(lines), b % len(lines)
    if kind == "flip":
        at = a % len(data)
        return data[:at] + bytes([data[at] ^ (1 << (b % 8))]) + data[at + 1 :]
    if kind == "drop":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(j, lines[i])
    elif kind == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncate":
        return data[: a % len(data)]
    return b"\n".join(lines) + b"\n"


@needs_native
class TestVerifyEquivalence:
    @pytest.mark.parametrize("version", [1, 2, None], ids=["v1", "v2", "mixed"])
    def test_intact(self, scenes: dict[Any, Scene], version: int | None) -> None:
        """An intact trail: the same report, intact, on both implementations."""
        scene = scenes[version]
        pure, native = scene.report(scene.data)
        assert pure == native
        assert pure["intact"], pure["findings"]
        assert "REDACTED" in [f["kind"] for f in pure["findings"]]

    @pytest.mark.parametrize("version", [1, 2, None], ids=["v1", "v2", "mixed"])
    def test_intact_in_one_pass(
        self, scenes: dict[Any, Scene], version: int | None
    ) -> None:
        """With the redaction event alone, both take the one-pass check, same report."""
        from custdata.audit import _verify

        scene = scenes[version]
        pure, native = scene.report(scene.claimed)
        assert pure == native
        assert pure["intact"], pure["findings"]
        assert ["UNANCHORED_TAIL"] == [f["kind"] for f in pure["findings"]]
        for impl in ("pure", "native"):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(_accel, "native", _use(impl))
                found = _verify._verify_json_lines_fast(
                    JsonLinesSource(scene.path), scene.keys
                )
            assert found is not None
            assert found[0] == pure["events"]

    @pytest.mark.parametrize("version", [1, 2, None], ids=["v1", "v2", "mixed"])
    @hypothesis.settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )
    @hypothesis.given(
        edits=st.lists(
            st.tuples(
                st.sampled_from(["flip", "drop", "duplicate", "swap", "truncate"]),
                st.integers(0, 10**6),
                st.integers(0, 10**6),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def test_tampered(
        self,
        scenes: dict[Any, Scene],
        version: int | None,
        edits: list[tuple[str, int, int]],
    ) -> None:
        """Random tampering: findings, heads and exit status are the same on both."""
        scene = scenes[version]
        data = scene.data
        for kind, a, b in edits:
            data = _tamper(data, kind, a, b)
        pure, native = scene.report(data)
        assert pure == native

    def test_keys_kept_past_1024_positions(self, tmp_path: Path) -> None:
        """A long chain tampered late resumes from the keys the native run kept."""
        keys = FakeKeys()
        for version in (1, 2):
            path = tmp_path / f"long-{version}.jsonl"
            with AuditTrail(
                keys,
                sinks=[JsonLinesSink(path, version=version)],
                checkpoint_interval=None,
            ) as t:
                for i in range(2200):
                    t.record_decision(decision("u-1", subjects=(f"c-{i}",)), now=T0)
            lines = path.read_bytes().split(b"\n")
            lines[2100], lines[2101] = lines[2101], lines[2100]
            del lines[2150]
            path.write_bytes(b"\n".join(lines))
            pure, native = _report_both(
                lambda p=path: verify_trail(JsonLinesSource(p), keys)
            )
            assert pure == native
            assert "MISSING" in [f["kind"] for f in pure["findings"]]

    def test_spilled_macs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a tiny spill limit the native runs stop at every spill check."""
        from custdata.audit import _spill, _verify

        real = _spill.MacSpill.__init__

        def tiny(self: _spill.MacSpill, limit: int = 0) -> None:
            real(self, 64)

        monkeypatch.setattr(_spill.MacSpill, "__init__", tiny)
        monkeypatch.setattr(_verify, "_SPILL_EVERY", 0x7)
        keys = FakeKeys()
        path = tmp_path / "spill.jsonl"
        with AuditTrail(
            keys, sinks=[JsonLinesSink(path)], checkpoint_interval=None
        ) as t:
            for i in range(100):
                t.record_decision(decision("u-1", subjects=(f"c-{i}",)), now=T0)
        pure, native = _report_both(lambda: verify_trail(JsonLinesSource(path), keys))
        assert pure == native
        assert pure["intact"]

    def test_an_over_long_line_is_left_to_python(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A valid record longer than the reader's limit stops the native run too."""
        keys = FakeKeys()
        path = tmp_path / "long-line.jsonl"
        with AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        ) as t:
            for i in range(30):
                subjects = tuple(f"c-{i}-{j}" for j in range(20 if i == 20 else 1))
                t.record_decision(decision("u-1", subjects=subjects), now=T0)
        lengths = sorted(len(x) for x in path.read_bytes().split(b"\n"))
        monkeypatch.setattr(_store, "MAX_LINE", lengths[-2] + 1)
        pure, native = _report_both(lambda: verify_trail(JsonLinesSource(path), keys))
        assert pure == native
        assert any("longer than" in f["detail"] for f in pure["findings"])
