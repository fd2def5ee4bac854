"""ServiceView readiness: a view is routed only once discovery has answered for
its endpoints and, where the source serves profiles, for its profile."""

from __future__ import annotations

import asyncio

from tulle.core.discovery import Backend, Endpoint, Profile, ServiceView

SPLIT = Profile(backends=(Backend("stable", 50), Backend("canary", 50)))


def test_view_without_profile_stream_is_ready_on_endpoints() -> None:
    view = ServiceView("web")
    assert not view.ready
    view.apply_reset([Endpoint(("127.0.0.1", 8080))])
    assert view.ready and view.known


def test_endpoints_first_then_profile() -> None:
    view = ServiceView("shop", profile_expected=True)
    view.apply_no_endpoints(exists=True)  # a split's apex has no endpoints
    assert view.exists is True and not view.ready
    view.apply_profile(SPLIT)
    assert view.ready


def test_profile_first_then_endpoints() -> None:
    view = ServiceView("shop", profile_expected=True)
    view.apply_profile(SPLIT)
    assert not view.ready
    view.apply_no_endpoints(exists=False)
    assert view.ready and view.exists is False


def test_waiters_wake_only_when_both_answers_are_in() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        view = ServiceView("shop", profile_expected=True)
        waiter = asyncio.ensure_future(view.wait_known(5.0))
        await asyncio.sleep(0)
        view.apply_no_endpoints(exists=True)
        await asyncio.sleep(0)
        early = waiter.done()
        view.apply_profile(SPLIT)
        result = await waiter
        return early, result, view.profile == SPLIT

    early, result, has_split = asyncio.run(scenario())
    assert not early
    assert result and has_split


def test_missing_profile_stops_the_wait_once_endpoints_are_known() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        view = ServiceView("web", profile_expected=True)
        view.apply_reset([Endpoint(("127.0.0.1", 8080))])
        first = await view.wait_known(0.01)
        # Served without a profile from now on: no second wait.
        return first, view.ready, await view.wait_known(0.0)

    assert asyncio.run(scenario()) == (True, True, True)


def test_no_answer_at_all_times_out() -> None:
    async def scenario() -> tuple[bool, bool]:
        view = ServiceView("web", profile_expected=True)
        view.apply_profile(Profile())
        return await view.wait_known(0.01), view.ready

    assert asyncio.run(scenario()) == (False, False)
