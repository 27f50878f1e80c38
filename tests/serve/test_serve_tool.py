"""``python -m bmc_detectron.tools.serve``: model paths (flags, environment, the demo's), a clear
error when the models are missing, the bind address, and the ONNX Runtime backend end to end."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model

from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.tools import serve as tool
from tests.helpers import CONFIGS
from tests.serve.helpers import DET_CONFIG, DET_OPTS, encode, save_tiny_detector, smear

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")

CLS_CONFIG = str(CONFIGS / "recognition" / "cell_classifier_R_18_synth_cpu.yaml")
CLS_OPTS = ["MODEL.BMC.CLASSIFIER.CROP_SIZE", "32"]


@pytest.fixture
def no_env(monkeypatch):
    for var, _ in tool.PATHS.values():
        monkeypatch.delenv(var, raising=False)
    for var in ("BMC_BACKEND", "BMC_SERVE_HOST", "BMC_SERVE_PORT"):
        monkeypatch.delenv(var, raising=False)


def test_missing_models_say_run_make_demo(tmp_path, monkeypatch, capsys, no_env):
    monkeypatch.chdir(tmp_path)
    assert tool.main([]) == 2
    err = capsys.readouterr().err
    assert "output/demo/onnx/detector.onnx" in err and "output/demo/onnx/classifier.onnx" in err
    assert "make demo" in err and err.count("\n") == 1
    assert tool.main(["--backend", "torch", "--no-classifier"]) == 2
    err = capsys.readouterr().err
    assert "output/demo/detector/model_final.pth" in err and "classifier" not in err


def test_paths_from_flags_environment_and_demo(monkeypatch, no_env):
    args = tool.build_parser().parse_args([])
    assert (args.backend, args.host, args.port) == ("onnx", "127.0.0.1", 8000)
    assert args.detector_onnx == "output/demo/onnx/detector.onnx"
    assert args.classifier_weights == "output/demo/classifier/model_final.pth"
    monkeypatch.setenv("BMC_DETECTOR_ONNX", "/models/det.onnx")
    monkeypatch.setenv("BMC_BACKEND", "torch")
    args = tool.build_parser().parse_args([])
    assert (args.detector_onnx, args.backend) == ("/models/det.onnx", "torch")
    args = tool.build_parser().parse_args(["--detector-onnx", "d.onnx", "--backend", "onnx"])
    assert (args.detector_onnx, args.backend) == ("d.onnx", "onnx")


def test_bind_address_and_hosts(no_env):
    assert tool.is_loopback("127.0.0.1") and tool.is_loopback("::1")
    assert tool.is_loopback("localhost") and not tool.is_loopback("0.0.0.0")
    settings = tool.build_settings(tool.build_parser().parse_args(["--max-file-mb", "2"]))
    assert "localhost" in settings.allowed_hosts and "*" not in settings.allowed_hosts
    assert settings.max_file_bytes == 2 * 1024 * 1024
    wide = tool.build_settings(tool.build_parser().parse_args(["--host", "0.0.0.0"]))
    assert wide.allowed_hosts == ("*",)
    lab = ["--host", "0.0.0.0", "--allowed-host", "cells.lab", "--myeloid", "Promy,Myelo"]
    settings = tool.build_settings(tool.build_parser().parse_args(lab))
    assert settings.allowed_hosts == ("cells.lab",)
    assert settings.lineage.myeloid == ("Promy", "Myelo")


def test_score_threshold_and_floor(tmp_path, no_env):
    """Cells are counted from --score-threshold (where the page's slider starts); detections
    are kept from --score-floor (the slider's lowest), which is the counter's threshold."""
    args = tool.build_parser().parse_args([])
    assert (args.score_threshold, args.score_floor) == (0.5, 0.1)
    assert tool.build_settings(args).default_threshold == 0.5
    argv = ["--score-threshold", "0.05", "--score-floor", "0.2", "--backend", "torch"]
    files = {}
    for name in tool.PATHS:
        files[name] = tmp_path / name
        files[name].write_text("")
        argv += ["--" + name.replace("_", "-"), str(files[name])]
    args = tool.build_parser().parse_args(argv)
    assert tool.build_settings(args).default_threshold == 0.2  # never below what is kept
    spec = tool.counter_spec(args)
    assert (spec.backend, spec.score_threshold) == ("torch", 0.2)
    assert spec.detector_weights == str(files["detector_weights"]) and spec.detector_onnx is None


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
    from bmc_detectron.tools import export_onnx

    folder = tmp_path_factory.mktemp("serve_onnx")
    det = save_tiny_detector(folder / "det.pth")
    argv = ["--config-file", DET_CONFIG, "--weights", str(det), "--no-verify"]
    assert export_onnx.main([*argv, "--output", str(folder / "detector.onnx"), *DET_OPTS]) == 0
    cfg = build_cfg(CLS_CONFIG, [*CLS_OPTS, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, folder / "cls.pth")
    argv = ["--config-file", CLS_CONFIG, "--weights", str(folder / "cls.pth"), "--no-verify"]
    assert export_onnx.main([*argv, "--output", str(folder / "classifier.onnx"), *CLS_OPTS]) == 0
    return folder


def test_onnx_backend_serves_the_page_and_api(onnx_models, no_env, monkeypatch):
    from fastapi.testclient import TestClient

    from bmc_detectron.serve import ServeSettings, create_app

    monkeypatch.setenv("BMC_DETECTOR_ONNX", str(onnx_models / "detector.onnx"))
    argv = ["--classifier-onnx", str(onnx_models / "classifier.onnx"), "--threads", "1"]
    args = tool.build_parser().parse_args(argv)
    counter = tool.build_counter(tool.counter_spec(args))
    settings = ServeSettings(allowed_hosts=("testserver",))
    app = create_app(counter, {"files": tool.model_files(args)}, settings)
    with TestClient(app) as client:
        model = client.get("/api/v1/model").json()
        assert model["backend"] == "onnxruntime" and model["class_names"] == list(MARROW_ABBRS)
        assert model["files"]["detector_onnx"].endswith("detector.onnx")
        assert model["detector"]["identity"]["onnx_sha256"]
        assert model["classifier"]["crop_size"] == 32
        files = {"files": ("field.png", encode(smear(120, 160, seed=5)))}
        response = client.post("/api/v1/analyze", files=files)
        assert response.status_code == 200, response.text
        cells = response.json()["fields"][0]["cells"]
        assert cells and all(len(c["probs"]) == 11 for c in cells)
        assert min(c["det_score"] for c in cells) >= 0.1
        assert client.get("/").status_code == 200


def test_the_automatic_scale_is_on_unless_turned_off(no_env):
    assert tool.build_parser().parse_args([]).auto_scale is True
    assert tool.build_parser().parse_args(["--no-auto-scale"]).auto_scale is False
