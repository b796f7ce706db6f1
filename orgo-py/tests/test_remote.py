"""orgo.Client and orgo.aio.Client against a real `orgo serve` over TCP,
with computers under QEMU TCG.

The server is the workspace's `orgo` binary (`$ORGO_BIN`, else
`target/debug/orgo`, which `scripts/test.sh` builds), on 127.0.0.1 with a
random port, its store the test home the other VM tests share
(`$ORGO_TEST_HOME`, else `target/orgo-test-home`: the base image is cached
there). Its key comes from `orgo keys create`. The template is the one of
`bins/orgo/tests/remote_cli.rs` and `serve_restart.rs`: whichever runs
first builds it, the others find its snapshot.

Needs root, QEMU and, for a first base image, mmdebstrap and Debian's mirror.
"""

import asyncio
import os
import pathlib
import subprocess
import threading
import time

import pytest

import orgo
import orgo.aio
from conftest import REPO

NAMESPACE = "pyremote"
BASE = 'api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: ["echo base > /opt/base.txt"]\n'
REF = f"{NAMESPACE}/restart-base@1.0.0"
# Problems at plain keys, a quoted key and indexes: every path reads back.
INVALID = """api_version: orgo.ai/v1
name: b@1.0.0
hardwares: {}
cpu: 3
env:
  "A B": x
apps:
  - name: web
    services:
      - { name: s, command: x, restart: sometimes }
"""

# Prints, waits until the file `$GO` exists (a callback makes it), prints
# more; `é` comes in two writes, cut inside the character.
STREAMING = (
    "echo first; "
    'for i in $(seq 1200); do [ -e "$GO" ] && break; sleep 0.05; done; '
    '[ -e "$GO" ] || { echo "no $GO" >&2; exit 1; }; '
    "echo second >&2; printf 'caf\\xc3'; sleep 0.3; printf '\\xa9\\n'"
)


def orgo_bin():
    path = pathlib.Path(os.environ.get("ORGO_BIN") or REPO / "target" / "debug" / "orgo")
    assert path.is_file(), f"no orgo binary at {path}: build it with `cargo build -p orgo`"
    return path


@pytest.fixture(scope="session")
def server():
    """`orgo serve` on a random port of 127.0.0.1, and a key of `pyremote`."""
    home = pathlib.Path(os.environ.get("ORGO_TEST_HOME") or REPO / "target" / "orgo-test-home")
    env = {k: v for k, v in os.environ.items() if k not in ("ORGO_URL", "ORGO_API_KEY")}
    env["ORGO_HOME"] = str(home)
    env.setdefault("ORGO_ACCEL", "tcg")
    # The templates here fetch nothing: no CA certificates to install in
    # builder VMs (a minute under TCG).
    env.pop("ORGO_GUEST_CA_CERTS", None)
    key = subprocess.run(
        [orgo_bin(), "keys", "create", "--namespace", NAMESPACE],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()
    process = subprocess.Popen(
        [orgo_bin(), "serve", "--listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        address = process.stdout.readline().strip()
        assert address, "orgo serve printed no address"
        yield {"url": f"http://{address}", "key": key}
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def client(server):
    return orgo.Client(server["url"], server["key"])


@pytest.fixture(scope="session")
def built(client):
    """The template published and built once, with the log `on_log` got."""
    client.publish(BASE, namespace=NAMESPACE)
    events = []
    return client.build(REF, on_log=events.append), events


def go_file():
    return f"/tmp/go-{os.getpid()}-{time.monotonic_ns()}"


def in_thread(work):
    """Runs `work` in a thread: a callback must not call orgo on its own thread."""
    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_publish_created_then_the_same_then_a_conflict(client):
    digest = orgo.Template.from_yaml(BASE).digest
    first = client.publish(BASE, namespace=NAMESPACE)
    assert first["ref"] == REF and first["digest"] == digest
    again = client.publish(orgo.Template.from_yaml(BASE))  # the key's namespace
    assert again == {"ref": REF, "digest": digest, "published": False}
    assert {"ref": REF, "digest": digest} in client.templates()

    with pytest.raises(orgo.ApiError) as info:
        client.publish(BASE + "env: { A: b }\n")
    error = info.value
    assert (error.code, error.status) == ("version_conflict", 409)
    assert error.details["existing"] == digest
    assert error.details["new"] == orgo.Template.from_yaml(BASE + "env: { A: b }\n").digest
    assert isinstance(error, orgo.OrgoError)


def test_an_invalid_document_raises_validation_error_with_the_servers_diagnostics(client):
    with pytest.raises(orgo.ValidationError) as remote:
        client.publish(INVALID)
    with pytest.raises(orgo.ValidationError) as local:
        orgo.Template.from_yaml(INVALID)

    def seen(error):
        return [(d.path, d.path_str, d.line, d.column, d.message) for d in error.errors]

    assert len(remote.value.errors) == 6
    assert seen(remote.value) == seen(local.value)
    assert str(remote.value) == str(local.value)
    paths = [d.path for d in remote.value.errors]
    assert ["env", "A B"] in paths and ["apps", 0, "services", 0, "restart"] in paths


def test_a_wrong_key_and_another_namespace_are_refused(server, client):
    with pytest.raises(orgo.ApiError) as info:
        orgo.Client(server["url"], "orgo_not-a-key").templates()
    assert (info.value.code, info.value.status) == ("unauthorized", 401)
    with pytest.raises(orgo.ApiError) as info:
        client.publish(BASE, namespace="someone-else")
    assert (info.value.code, info.value.status) == ("namespace_scope_mismatch", 403)
    with pytest.raises(orgo.NotFoundError):
        client.build(f"{NAMESPACE}/absent@1.0.0")
    with pytest.raises(orgo.NotFoundError):
        client.connect("c-000000000000")


def test_build_streams_its_log_and_is_cached_the_second_time(client, built):
    result, events = built
    assert result.template_digest == orgo.Template.from_yaml(BASE).digest
    assert result.snapshot_digest.startswith("sha256:")
    assert result.backend == "remote"
    assert all(isinstance(e, orgo.LogEvent) for e in events)
    if not result.cached:
        # Built by this call: the step and its status lines came as they happened.
        steps = [e for e in events if e.kind == "step"]
        assert [(e.field, e.index, e.total) for e in steps] == [("build.run[0]", 1, 1)]
    again = client.build(REF)
    assert again.cached and again.snapshot_digest == result.snapshot_digest


def test_a_failing_step_raises_build_error_with_its_field_and_output(client):
    nonce = f"{os.getpid()}-{time.time_ns()}"
    failing = orgo.Template.from_yaml(f"""
api_version: orgo.ai/v1
name: py-remote-fail@1.0.0-n{nonce.replace("-", ".")}
build:
  run:
    - echo about to fail; echo oops >&2; exit 3
    - echo never > /opt/never.txt
""")
    events = []
    with pytest.raises(orgo.BuildError) as info:
        client.build(failing, on_log=events.append)  # published first, in the key's namespace
    error = info.value
    assert (error.field, error.reason) == ("build.run[0]", "exited with status 3")
    assert "about to fail" in error.output and "oops" in error.output
    assert str(error).startswith("`build.run[0]` exited with status 3")
    assert [e.field for e in events if e.kind == "step"] == ["build.run[0]"]
    assert ("stderr", "oops\n") in [(e.stream, e.text) for e in events if e.kind == "output"]


def test_launch_exec_streaming_files_and_stop(client, built):
    with client.launch(REF) as c:
        assert isinstance(c, orgo.RemoteComputer)
        assert c.id.startswith("c-") and c.template == REF
        assert (c.cpu, c.memory_mib) == (1, 1024)

        r = c.exec("cat /opt/base.txt; echo err >&2; exit 3")
        assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == ("base\n", "err\n", 3, False)
        assert c.exec(["printf", "%s|", "a b", "$HOME"]).stdout == "a b|$HOME|"
        r = c.exec("echo $(id -un) $(pwd) $ONE", user="orgo", cwd="/tmp", env={"ONE": "1"})
        assert r.stdout == "orgo /tmp 1\n"

        # Output comes while the command runs: it waits for a file that
        # the first callback has a thread write.
        go, out, err, writers = go_file(), [], [], []

        def on_stdout(chunk):
            out.append(chunk)
            if len(out) == 1:
                writers.append(in_thread(lambda: c.write_file(go, "go")))

        r = c.exec(STREAMING, env={"GO": go}, on_stdout=on_stdout, on_stderr=err.append)
        for writer in writers:
            writer.join()
        assert (r.exit_code, r.stdout, r.stderr) == (0, "first\ncafé\n", "second\n")
        assert out[0] == "first\n"
        assert "".join(out) == r.stdout and "".join(err) == r.stderr
        assert all("\ufffd" not in chunk for chunk in out), out
        # Invalid bytes are replaced, as in the result.
        bad = []
        assert c.exec("printf 'a\\xffb'", on_stdout=bad.append).stdout == "a\ufffdb"
        assert "".join(bad) == "a\ufffdb"

        # The server's timeout kills it and says so.
        r = c.exec("echo started; sleep 60", timeout=1)
        assert r.timed_out and r.exit_code < 0 and r.stdout == "started\n"
        with pytest.raises(orgo.OrgoError, match="input"):
            c.exec(["cat"], input=b"x")

        data = bytes(range(256)) * 3
        c.write_file("/tmp/new/dir/data.bin", data, mode=0o600)
        assert c.read_file("/tmp/new/dir/data.bin") == data
        assert c.exec(["stat", "-c", "%a", "/tmp/new/dir/data.bin"]).stdout == "600\n"
        c.write_file("/tmp/text.txt", "héllo\n")
        assert c.read_text("/tmp/text.txt") == "héllo\n"
        assert c.exec("cat /tmp/text.txt").stdout == "héllo\n"
        with pytest.raises(orgo.NotFoundError):
            c.read_file("/tmp/no-such-file")

        assert c.stop() is None  # no on_shutdown hook
        assert c.closed and c.stop() is None
    with pytest.raises(orgo.OrgoError, match=f"computer `{c.id}` is stopped"):
        c.exec("true")
    with pytest.raises(orgo.NotFoundError):
        client.connect(c.id)


def test_a_callbacks_exception_is_raised_when_the_command_ends(client, built):
    with client.launch(REF) as c:
        calls = []

        def on_stdout(chunk):
            calls.append(chunk)
            raise ZeroDivisionError("from on_stdout")

        with pytest.raises(ZeroDivisionError, match="from on_stdout"):
            c.exec("echo a; sleep 0.5; echo b; echo done > /tmp/after", on_stdout=on_stdout)
        assert len(calls) == 1, "not called again once it raised"
        assert c.read_text("/tmp/after") == "done\n", "the command ran to its end"
        # Calling orgo from the callback's own thread is refused, clearly.
        with pytest.raises(orgo.OrgoError, match="inside a callback"):
            c.exec("echo x", on_stdout=lambda _: c.read_file("/etc/hostname"))


def test_a_detached_computer_is_reached_again_by_id(client, built):
    c = client.launch(REF)
    c.detach()
    with pytest.raises(orgo.OrgoError, match="detached"):
        c.exec("true")
    again = client.connect(c.id)
    try:
        assert again.exec("hostname").stdout == f"{c.id}\n"
    finally:
        again.stop()


def test_the_automations_calls_reach_the_server(client, built):
    with client.launch(REF) as c:
        assert "orgo_cpu_seconds_total" in c.metrics()
        events = c.events()
        assert isinstance(events, list)
        assert all({"ts", "seq", "kind"} <= set(e) for e in events), events
        # This template has no services: no logs (api_vm checks lines).
        assert c.logs() == [] and c.logs(since=60) == []
        with pytest.raises(orgo.NotFoundError, match="nothing"):
            c.logs("nothing")
        with pytest.raises(orgo.NotFoundError, match="/nope"):
            c.trigger("/nope", "data")


def test_the_asyncio_client(server, built):
    async def main():
        loop_thread = threading.get_ident()
        client = orgo.aio.Client(server["url"], server["key"])
        assert (await client.build(REF)).cached
        async with await client.launch(REF) as c:
            assert isinstance(c.sync, orgo.RemoteComputer)
            go, seen = go_file(), []

            async def on_stdout(chunk):
                seen.append((chunk, threading.get_ident()))
                if len(seen) == 1:
                    await c.write_file(go, "go")

            # The callback runs on the loop and awaits another call while
            # exec is pending: the loop is free while the command runs.
            r = await c.exec(STREAMING, env={"GO": go}, on_stdout=on_stdout)
            assert (r.exit_code, r.stdout) == (0, "first\ncafé\n")
            assert seen[0] == ("first\n", loop_thread), "on the event loop's thread"
            await c.write_file("/tmp/a.txt", b"async")
            assert await c.read_file("/tmp/a.txt") == b"async"
        assert c.closed

    asyncio.run(main())



SECRET = """api_version: orgo.ai/v1
name: py-remote-secret@1.0.0
secrets:
  - name: api_key
env:
  API_KEY: { secret: api_key }
"""


def test_secrets_go_with_the_launch_and_a_missing_one_raises_secret_error(client):
    template = orgo.Template.from_yaml(SECRET)  # the same each run: built once per home
    with pytest.raises(orgo.SecretError) as info:
        client.launch(template)
    assert info.value.missing == ["api_key"]
    with client.launch(template, secrets={"api_key": "s3cret"}, env={"EXTRA": "x"}) as c:
        assert c.exec('echo "$API_KEY|$EXTRA"').stdout == "s3cret|x\n"
