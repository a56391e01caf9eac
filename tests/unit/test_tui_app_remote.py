"""`corral top --url` as a person meets it: the app over RemoteSource against a real agent
process on loopback (the monitor's Agent replaying the recording captured from the real
kernel, served by MetricsServer with the JSON API). The agent is killed: the app says it is
disconnected and keeps answering keys; a new agent on the same port: the rows come back."""

from __future__ import annotations

import socket
from collections.abc import Callable

from test_tui_app import banner, shown, until
from test_tui_sources_remote import agent_process
from textual.pilot import Pilot
from tui_data import pilot_test

from dashboards.tui.app import CorralTop
from dashboards.tui.screens.help import HelpScreen
from dashboards.tui.sources.remote import RemoteSource

RECORDED = {"demo.slice/web.service", "demo.slice/batch.service", "demo.slice/forky.service"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait(pilot: Pilot[None], condition: Callable[[], object]) -> None:
    await until(pilot, condition, timeout=20)


@pilot_test
async def test_the_dashboard_follows_an_agent_that_dies_and_comes_back() -> None:
    port = free_port()
    source = RemoteSource(f"http://127.0.0.1:{port}", interval=0.2)
    with agent_process(port) as (first, _):
        app = CorralTop(source)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait(pilot, lambda: set(shown(app)) >= RECORDED)
            assert not banner(app).display
            first.kill()
            first.wait(10)
            await wait(pilot, lambda: banner(app).display)
            text = str(banner(app).render())
            assert text.startswith("disconnected: ") and "retrying" in text, text
            await pilot.press("question_mark")  # input is still answered while it is down
            await wait(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.press("escape")
            with agent_process(port):
                await wait(pilot, lambda: not banner(app).display)
                assert set(shown(app)) >= RECORDED
