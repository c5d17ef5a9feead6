"""`python -m core caption` and `captions import/export` end to end on the demo scenes."""

import json

import pytest

from core.cli import main
from core.config import DEMO_SCENES


@pytest.fixture()
def cli(tmp_path, capsys):
    def run(*argv):
        code = main(["--work", str(tmp_path / "work"), *argv, "--json"])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else None), err

    return run


def test_caption_resumes_and_exports_controlnet_pairs(cli, tmp_path):
    code, first, err = cli("caption", "--data", str(DEMO_SCENES), "--captioner", "template")
    assert code == 0, err
    assert first["captioned"] == 12 and first["skipped"] == 0
    code, again, _ = cli("caption", "--data", str(DEMO_SCENES), "--captioner", "template")
    assert again["captioned"] == 0 and again["skipped"] == 12

    out = tmp_path / "metadata.jsonl"
    code, export, _ = cli("captions", "export", "--format", "controlnet", "--data", str(DEMO_SCENES),
                          "--out", str(out))
    assert code == 0 and export["written"] == 6
    line = json.loads(out.read_text().splitlines()[0])
    assert set(line) == {"image", "conditioning_image", "text"}
    assert line["image"].endswith("_post_disaster.png") and line["conditioning_image"].endswith("_pre_disaster.png")


def test_course_file_round_trips(cli, tmp_path):
    course = tmp_path / "captions.jsonl"
    records = [{"disaster": "guatemala-volcano", "image": "guatemala-volcano_00000004_post_disaster.png",
                "caption": "A long description.", "caption_short": "Short."},
               {"disaster": "palu-tsunami", "image": "palu-tsunami_00000002_pre_disaster.png",
                "caption": "Another one.", "caption_short": "Brief."}]
    course.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    code, report, err = cli("captions", "import", str(course))
    assert code == 0, err
    assert "2 added" in report["summary"] and report["bad_lines"][0]["line"] == 3
    out = tmp_path / "back.jsonl"
    code, _, _ = cli("captions", "export", "--format", "course", "--out", str(out))
    back = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["image"])
    assert back == sorted(records, key=lambda r: r["image"])


def test_unknown_captioner_is_a_clear_error(cli):
    code, _, err = cli("caption", "--data", str(DEMO_SCENES), "--captioner", "gpt-vision")
    assert code == 2 and "gpt-vision" in err and "template" in err
