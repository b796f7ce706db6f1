"""orgo.build and orgo.launch for real: computers under QEMU TCG.

One small template (two `build.run` commands, a file, a secret in the
environment, `on_resume` and `on_shutdown` hooks) is built once per session;
its nonce makes each session really build it. The orgo home is
`target/orgo-test-home` (shared with the Rust end-to-end tests, which build
the base image there once), or `$ORGO_TEST_HOME`; the accelerator is TCG
unless `$ORGO_ACCEL` says otherwise; the static agent is the one built into
the extension (as a user's `pip install` gets it), or `$ORGO_AGENT`.

Needs root, QEMU and, for the first base image, mmdebstrap and Debian's
package mirror.
"""

import asyncio
import gc
import os
import pathlib
import threading
import time

import pytest

import orgo
import orgo.aio
from conftest import REPO

TEMPLATE = """
api_version: orgo.ai/v1
name: {name}@1.0.0
secrets:
  - name: api_key
env:
  RUN_NONCE: "{nonce}"
  API_KEY: {{ secret: api_key }}
build:
  run:
    - echo built > /opt/built.txt
    - echo to-stdout; echo to-stderr >&2
files:
  - {{ to: /opt/hello.txt, inline: "hello from orgo\\n" }}
hooks:
  on_resume: hostname > /opt/resumed.txt
  on_shutdown: echo "bye from $(hostname)"
apps:
  - name: greeter
    services:
      - name: greeter
        run: "echo hello from the service; exec sleep infinity"
triggers:
  - name: ping
    source: {{ type: webhook, path: /ping }}
    actions: [{{ run: "cat > /tmp/pinged" }}, {{ alert: pinged }}]
"""


def nonce():
    return f"{os.getpid()}-{time.time_ns()}"


@pytest.fixture(scope="session")
def where():
    """The keywords every call takes: the test home. Sets `ORGO_ACCEL=tcg`
    for the session unless it is set."""
    home = pathlib.Path(os.environ.get("ORGO_TEST_HOME") or REPO / "target" / "orgo-test-home")
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("ORGO_ACCEL"):
            mp.setenv("ORGO_ACCEL", "tcg")
        yield {"home": home}


@pytest.fixture(scope="session")
def template():
    return orgo.Template.from_yaml(TEMPLATE.format(name="py-e2e", nonce=nonce()))


@pytest.fixture(scope="session")
def built(template, where):
    """The session's one real build, with every event on_log received."""
    events = []
    result = orgo.build(template, on_log=events.append, **where)
    return result, events


def computer_dir(where, computer_id):
    return pathlib.Path(where["home"]) / "computers" / computer_id


def test_build_reports_its_steps_and_their_output(built, template):
    result, events = built
    assert result.cached is False
    assert result.template_digest == template.digest
    assert result.snapshot_digest.startswith("sha256:")
    assert result.backend.startswith("qemu-")
    assert all(isinstance(e, orgo.LogEvent) for e in events)
    steps = [e for e in events if e.kind == "step"]
    assert [e.field for e in steps] == [
        "build.run[0]", "build.run[1]", "files[0]", "apps[0].services[0]"
    ]
    assert [(e.index, e.total) for e in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert str(steps[0]) == "[1/4] build.run[0]"
    output = [e for e in events if e.kind == "output"]
    assert ("stdout", b"to-stdout\n") in [(e.stream, e.data) for e in output]
    assert ("stderr", b"to-stderr\n") in [(e.stream, e.data) for e in output]
    assert any(e.kind == "status" and "snapshot" in e.text for e in events)


def test_a_second_build_is_cached_whatever_names_the_template(built, template, where, tmp_path):
    first, _ = built
    events = []
    again = orgo.build(template, on_log=events.append, **where)
    assert again.cached is True
    assert (again.template_digest, again.snapshot_digest) == (
        first.template_digest, first.snapshot_digest)
    assert not [e for e in events if e.kind == "step"]
    # The same template from a file is the same digest: the same snapshot.
    path = tmp_path / "t.yaml"
    path.write_text(template.to_yaml(), encoding="utf-8")
    from_file = orgo.build(path, **where)
    assert (from_file.cached, from_file.snapshot_digest) == (True, first.snapshot_digest)


def test_an_unpublished_ref_is_not_found(where):
    with pytest.raises(orgo.NotFoundError, match="nobody/absent@1.0.0"):
        orgo.build("nobody/absent@1.0.0", **where)
    with pytest.raises(orgo.OrgoError, match="not a template ref"):
        orgo.build("not a ref", **where)


def test_launch_exec_files_env_secrets_and_stop(built, template, where):
    with orgo.launch(template, env={"EXTRA": "given"}, secrets={"api_key": "s3cret"},
                     **where) as c:
        assert c.id.startswith("c-") and len(c.id) == 14
        assert c.template == "py-e2e@1.0.0"
        assert c.template_digest == template.digest
        assert c.snapshot_digest == built[0].snapshot_digest
        assert (c.cpu, c.memory_mib) == (1, 1024)
        assert computer_dir(where, c.id).is_dir()

        # A str runs in bash; stdout, stderr and the exit code come apart.
        r = c.exec("echo out; echo err >&2; exit 3")
        assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == ("out\n", "err\n", 3, False)
        # A list is an argv: no shell expands it.
        r = c.exec(["printf", "%s|", "a b", "$HOME"])
        assert (r.stdout, r.exit_code) == ("a b|$HOME|", 0)
        # What the build wrote, and what on_resume wrote at this launch.
        assert c.exec(["cat", "/opt/built.txt", "/opt/hello.txt"]).stdout == "built\nhello from orgo\n"
        assert c.read_text("/opt/resumed.txt") == f"{c.id}\n"
        # The template's env (its secret filled in) and the launch's env.
        r = c.exec('echo "$RUN_NONCE|$API_KEY|$EXTRA"')
        assert r.stdout == f"{template.normalize()['env']['RUN_NONCE']}|s3cret|given\n"
        # Per-command user, directory, environment and stdin.
        r = c.exec("echo $(id -un) $(pwd) $ONE", user="orgo", cwd="/tmp", env={"ONE": "1"})
        assert r.stdout == "orgo /tmp 1\n"
        assert c.exec(["cat"], input=b"piped in").stdout == "piped in"
        # A timeout kills the command.
        r = c.exec("echo started; sleep 60", timeout=1)
        assert r.timed_out and r.exit_code < 0 and r.stdout == "started\n"

        data = bytes(range(256)) * 3
        c.write_file("/tmp/new/dir/data.bin", data, mode=0o600)
        assert c.read_file("/tmp/new/dir/data.bin") == data
        assert c.exec(["stat", "-c", "%a", "/tmp/new/dir/data.bin"]).stdout == "600\n"
        c.write_file("/tmp/text.txt", "héllo\n")
        assert c.read_text("/tmp/text.txt") == "héllo\n"
        with pytest.raises(orgo.NotFoundError):
            c.read_file("/tmp/no-such-file")

        said = c.stop()
        assert said == f"bye from {c.id}\n"
        assert c.closed
        # Stopping again is a no-op; the with block's own stop too.
        assert c.stop() is None
    assert not computer_dir(where, c.id).exists()
    with pytest.raises(orgo.OrgoError, match=f"computer `{c.id}` is stopped"):
        c.exec("true")


def test_logs_events_services_and_a_webhook_trigger(built, template, where):
    with orgo.launch(template, secrets={"api_key": "k"}, **where) as c:
        assert list(c.logs("greeter")) == [("greeter", "hello from the service")]
        assert ("greeter", "hello from the service") in list(c.logs())
        assert list(c.logs("greeter", since=0.0)) == []
        [greeter] = c.services()
        assert (greeter["name"], greeter["state"], greeter["restarts"]) == ("greeter", "running", 0)
        assert c.trigger("/ping", b"payload") == ["ping"]
        deadline = time.monotonic() + 120
        alerts = []
        while not alerts and time.monotonic() < deadline:
            alerts = [e for e in c.events() if e["kind"] == "alert"]
            time.sleep(0.5)
        assert alerts and alerts[0]["trigger"] == "ping" and alerts[0]["message"] == "pinged"
        assert alerts[0]["ts"].endswith("Z") and isinstance(alerts[0]["seq"], int)
        assert c.read_text("/tmp/pinged") == "payload"
        kinds = [e["kind"] for e in c.events()]
        assert kinds.index("trigger_fired") < kinds.index("alert") < kinds.index("trigger_done")
        with pytest.raises(orgo.NotFoundError):
            c.trigger("/nowhere")


def test_two_computers_at_once_and_the_with_block_stops_them(built, template, where):
    with pytest.raises(KeyError, match="leaving"):
        with orgo.launch(template, secrets={"api_key": "a"}, **where) as a, \
                orgo.launch(template, secrets={"api_key": "b"}, **where) as b:
            assert a.id != b.id
            assert a.exec("hostname").stdout == f"{a.id}\n"
            assert b.exec("hostname").stdout == f"{b.id}\n"
            assert (a.exec("echo $API_KEY").stdout, b.exec("echo $API_KEY").stdout) == ("a\n", "b\n")
            # Each has its own disk.
            a.write_file("/opt/only-in-a", "a")
            assert b.exec(["test", "-e", "/opt/only-in-a"]).exit_code == 1
            raise KeyError("leaving")
    assert a.closed and b.closed
    assert not computer_dir(where, a.id).exists()
    assert not computer_dir(where, b.id).exists()


def test_calls_from_threads_share_a_computer(built, template, where):
    with orgo.launch(template, secrets={"api_key": "k"}, **where) as c:
        results = {}

        def run(i):
            results[i] = c.exec(f"echo {i}").stdout

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: f"{i}\n" for i in range(4)}


def test_a_detached_computer_is_reached_again_by_id(built, template, where):
    c = orgo.launch(template, secrets={"api_key": "k"}, **where)
    c.detach()
    assert c.closed
    with pytest.raises(orgo.OrgoError, match="detached"):
        c.exec("true")
    again = orgo.connect(c.id, home=where["home"])
    try:
        assert again.exec("hostname").stdout == f"{c.id}\n"
    finally:
        said = again.stop()
    assert said == f"bye from {c.id}\n"
    with pytest.raises(orgo.NotFoundError, match=c.id):
        orgo.connect(c.id, home=where["home"])


def test_a_missing_secret_is_refused_before_anything_is_built(where, monkeypatch):
    monkeypatch.delenv("ORGO_SECRET_API_KEY", raising=False)
    fresh = orgo.Template.from_yaml(TEMPLATE.format(name="py-secret", nonce=nonce()))
    events = []
    with pytest.raises(orgo.SecretError) as info:
        orgo.launch(fresh, on_log=events.append, **where)
    assert info.value.missing == ["api_key"]
    assert "`api_key` (secrets[0])" in str(info.value)
    assert "ORGO_SECRET_API_KEY" in str(info.value)
    assert events == [], "nothing was built"


def test_secrets_also_come_from_the_environment(built, template, where, monkeypatch):
    monkeypatch.setenv("ORGO_SECRET_API_KEY", "from-env")
    with orgo.launch(template, **where) as c:
        assert c.exec("echo $API_KEY").stdout == "from-env\n"
    # `secrets=` wins over the environment.
    with orgo.launch(template, secrets={"api_key": "given"}, **where) as c:
        assert c.exec("echo $API_KEY").stdout == "given\n"


def test_bad_arguments_are_refused_before_anything_runs(template, where):
    with pytest.raises(orgo.OrgoError, match="ram_gb must be 1"):
        orgo.launch(template, ram_gb=0, **where)
    with pytest.raises(TypeError, match="secrets names and values must be str"):
        orgo.launch(template, secrets={"api_key": 1}, **where)
    with pytest.raises(TypeError, match="on_log must be callable"):
        orgo.build(template, on_log="print", **where)
    with pytest.raises(TypeError, match="template must be"):
        orgo.build(42, **where)


def failing(name):
    return orgo.Template.from_yaml(f"""
api_version: orgo.ai/v1
name: {name}@1.0.0
env: {{ RUN_NONCE: "{nonce()}" }}
build:
  run:
    - echo about to fail; echo oops >&2; exit 3
    - echo never > /opt/never.txt
""")


def test_a_failing_step_raises_build_error_with_its_field_and_output(where):
    events = []
    with pytest.raises(orgo.BuildError) as info:
        orgo.build(failing("py-fail"), on_log=events.append, **where)
    error = info.value
    assert error.field == "build.run[0]"
    assert error.reason == "exited with status 3"
    assert "about to fail" in error.output and "oops" in error.output
    assert str(error).startswith("`build.run[0]` exited with status 3")
    assert "oops" in str(error)
    assert [e.field for e in events if e.kind == "step"] == ["build.run[0]"]


def test_an_exception_in_on_log_is_raised_when_the_build_ends(where):
    calls = []

    def on_log(event):
        calls.append(event)
        raise ZeroDivisionError("from on_log")

    with pytest.raises(ZeroDivisionError, match="from on_log") as info:
        orgo.build(failing("py-log-raises"), on_log=on_log, **where)
    assert len(calls) == 1, "not called again once it raised"
    # The build went on to its end: its own failure is the context.
    assert isinstance(info.value.__context__, orgo.BuildError)


def test_a_computer_nobody_stopped_is_stopped_when_collected(built, template, where):
    c = orgo.launch(template, secrets={"api_key": "k"}, **where)
    directory = computer_dir(where, c.id)
    assert directory.is_dir()
    del c
    gc.collect()
    assert not directory.exists()


def test_a_headless_computer_refuses_the_desktop_actions(built, template, where):
    with orgo.launch(template, secrets={"api_key": "k"}, **where) as c:
        for action in (lambda: c.screenshot(), lambda: c.click(1, 1), lambda: c.type("x"),
                       lambda: c.key("Return"), lambda: c.scroll("down"), lambda: c.cursor()):
            with pytest.raises(orgo.OrgoError) as info:
                action()
            assert "has no desktop" in str(info.value)
            assert "`hardware.resolution`" in str(info.value)
        with pytest.raises(orgo.OrgoError, match="button must be"):
            c.click(1, 1, button="thumb")
        with pytest.raises(orgo.OrgoError, match="both `x` and `y`"):
            c.scroll("down", 1, x=3)


# Prints, waits until the file `$GO` exists (a callback makes it), prints
# more; `é` comes in two writes, cut inside the character.
STREAMING = (
    "echo first; "
    'for i in $(seq 1200); do [ -e "$GO" ] && break; sleep 0.05; done; '
    '[ -e "$GO" ] || { echo "no $GO" >&2; exit 1; }; '
    "echo second >&2; printf 'caf\\xc3'; sleep 0.3; printf '\\xa9\\n'"
)


def test_exec_callbacks_get_the_output_as_it_comes(built, template, where):
    with orgo.launch(template, secrets={"api_key": "k"}, **where) as c:
        go, out, err, writers = f"/tmp/go-{nonce()}", [], [], []

        def on_stdout(chunk):
            out.append(chunk)
            if len(out) == 1:
                # Another thread: orgo calls from the callback's own are refused.
                writer = threading.Thread(target=lambda: c.write_file(go, "go"))
                writer.start()
                writers.append(writer)

        r = c.exec(STREAMING, env={"GO": go}, on_stdout=on_stdout, on_stderr=err.append)
        for writer in writers:
            writer.join()
        assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (0, "first\ncafé\n", "second\n", False)
        assert out[0] == "first\n"
        assert "".join(out) == r.stdout and "".join(err) == r.stderr
        assert all("\ufffd" not in chunk for chunk in out), out
        # With callbacks, a timeout still says it killed the command.
        r = c.exec("echo started; sleep 60", timeout=1, on_stdout=out.append)
        assert r.timed_out and r.stdout == "started\n" and out[-1] == "started\n"
        # stdin still works with callbacks.
        assert c.exec(["cat"], input=b"piped", on_stdout=out.append).stdout == "piped"

        calls = []

        def raises(chunk):
            calls.append(chunk)
            raise ZeroDivisionError("from on_stderr")

        with pytest.raises(ZeroDivisionError, match="from on_stderr"):
            c.exec("echo a >&2; sleep 0.5; echo b >&2; echo done > /tmp/after", on_stderr=raises)
        assert len(calls) == 1, "not called again once it raised"
        assert c.read_text("/tmp/after") == "done\n", "the command ran to its end"
        with pytest.raises(orgo.OrgoError, match="inside a callback"):
            c.exec("echo x", on_stdout=lambda _: c.read_file("/etc/hostname"))
        with pytest.raises(TypeError, match="on_stdout must be callable"):
            c.exec("true", on_stdout="print")


def test_the_asyncio_module(built, template, where):
    async def main():
        loop_thread = threading.get_ident()
        assert (await orgo.aio.build(template, **where)).cached
        async with await orgo.aio.launch(template, secrets={"api_key": "k"}, **where) as c:
            assert isinstance(c.sync, orgo.Computer)
            go, seen = f"/tmp/go-{nonce()}", []

            async def on_stdout(chunk):
                seen.append((chunk, threading.get_ident()))
                if len(seen) == 1:
                    # The loop is free while exec runs in its thread.
                    await c.write_file(go, "go")

            r = await c.exec(STREAMING, env={"GO": go}, on_stdout=on_stdout)
            assert (r.exit_code, r.stdout) == (0, "first\ncafé\n")
            assert seen[0] == ("first\n", loop_thread), "on the event loop's thread"
            assert await c.read_text("/opt/hello.txt") == "hello from orgo\n"
        assert c.closed
        assert not computer_dir(where, c.id).exists()

    asyncio.run(main())


def test_suspend_resume_checkpoint_and_fork(built, template, where):
    c = orgo.launch(template, secrets={"api_key": "k"}, **where)
    c.write_file("/opt/kept", "kept")
    c.detach()
    home = where["home"]
    forks = []
    try:
        stood = orgo.suspend(c.id, home=home)
        assert 0 < stood < 600
        with pytest.raises(orgo.OrgoError, match=f"computer `{c.id}` is suspended"):
            orgo.connect(c.id, home=home)
        orgo.resume(c.id, home=home)
        again = orgo.connect(c.id, home=home)
        assert again.read_text("/opt/kept") == "kept"
        again.detach()
        digest = orgo.checkpoint(c.id, home=home)
        assert digest.startswith("sha256:") and len(digest) == 71
        # Published under a ref, it launches by it, as a template does.
        ref = f"pytest/branch-{time.time_ns()}@1.0.0"
        published = orgo.checkpoint(c.id, publish=ref, home=home)
        assert published.startswith("sha256:") and published != digest
        with pytest.raises(orgo.OrgoError, match="already published as"):
            orgo.checkpoint(c.id, publish=ref, home=home)
        with orgo.launch(ref, secrets={"api_key": "b"}, **where) as b:
            assert b.read_text("/opt/kept") == "kept"
            assert b.exec("echo $API_KEY").stdout == "b\n"
        forks = orgo.fork(c.id, count=1, secrets={"api_key": "f"}, home=home)
        [f] = forks
        assert f.id != c.id
        assert f.read_text("/opt/kept") == "kept"
        assert f.exec("hostname").stdout == f"{f.id}\n"
        assert f.exec("echo $API_KEY").stdout == "f\n"
    finally:
        for f in forks:
            f.stop()
        orgo.connect(c.id, home=home).stop()
