"""Training a ControlNet in a real browser: fill the form, start a short run, watch the loss
curve drawn and the status reach finished, then find the run among Generate's backbones
(tiny RANDOM SD 2.1: plumbing only, the pictures are noise)."""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]

NAME = "browser-run"


@pytest.fixture(scope="module")
def base(app, tmp_path_factory) -> str:
    """The app's own tiny SD 2.1 folder (the `app` fixture builds it), else a new one."""
    found = sorted(tmp_path_factory.getbasetemp().glob("e2e-models*/tiny-sd21"))
    if found:
        return str(found[0])
    from core.backends.tiny_models.sd import build_tiny_models

    folder = tmp_path_factory.mktemp("train-base")
    build_tiny_models(folder, ids=("tiny-sd21",))
    return str(folder / "tiny-sd21")


def number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def top(page, selector: str) -> None:
    """Scroll so that `selector` is at the top of the window."""
    page.locator(selector).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def test_a_short_run_draws_its_loss_and_becomes_a_backbone(app, page, base):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(app)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-name input, #train-name textarea").fill(NAME)
    page.get_by_role("combobox", name="Resolution (px)").click()
    page.get_by_role("option", name="64", exact=True).click()
    for elem_id, value in (("train-batch", 2), ("train-accum", 1), ("train-steps", 6)):
        number(page, elem_id, value)
    page.get_by_text("More settings", exact=True).click()
    for elem_id, value in (("train-validate-every", 3), ("train-checkpoint-every", 3), ("train-val-count", 1),
                           ("train-validation-steps", 2)):
        number(page, elem_id, value)
    folder = page.locator("#train-base-model input, #train-base-model textarea")
    folder.fill(base)
    folder.press("Tab")
    page.get_by_text("The base loads from").wait_for()  # the base was found
    top(page, "#train-intro")
    page.screenshot(path=str(ARTIFACTS / "train-1-form.png"))
    top(page, "#train-more")
    page.screenshot(path=str(ARTIFACTS / "train-2-more-settings.png"))

    page.locator("#train-start").click()
    status = page.locator("#train-status")
    status.get_by_text("running").wait_for()
    status.get_by_text(": finished", exact=False).wait_for(timeout=120_000)
    assert "step 6 / 6" in status.inner_text() and f"trained-{NAME}" in status.inner_text()
    plot = page.locator("#train-loss")
    plot.locator("img").first.wait_for()  # the curve is drawn
    page.locator("#train-gallery img").first.wait_for()
    assert page.locator("#train-gallery img").count() >= 2  # a generated tile beside the real one
    assert page.locator("#train-scores").get_by_text("6", exact=True).count() >= 1  # the last validation's row
    top(page, "#train-status")
    page.screenshot(path=str(ARTIFACTS / "train-3-finished.png"))

    page.get_by_role("tab", name="Generate").click()  # no restart: the finished run is a backbone now
    page.get_by_role("combobox", name="Backbone").click()
    option = page.get_by_role("option", name=f"{NAME} (your ControlNet", exact=False)
    option.wait_for()
    page.screenshot(path=str(ARTIFACTS / "train-4-generate-offers-it.png"))
    option.click()
    page.get_by_text(f"{NAME} (your ControlNet on SD 2.1", exact=False).first.wait_for()
