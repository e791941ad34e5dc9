"""load_model: transformers folders, Meta checkpoints, the hub cache, devices and errors.

Everything runs on the CPU with random-weight networks; no test reaches the network (a socket
guard records any attempt).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings

import pytest
import torch

from napari_sam2.engine import checkpoints
from napari_sam2.engine.model_files import Reporter, download_from_hub
from napari_sam2.engine.models import MODEL_IDS, Sam2Model, load_model
from napari_sam2.errors import ModelLoadError
from napari_sam2.testing import make_tiny_model, save_tiny_model, tiny_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse (and record) every outgoing connection made during a test."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"a test tried to reach the network: {attempts}"


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tied(model):
    """Meta's checkpoints hold one Fourier matrix for prompts and image positions; tie the copies."""
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def embeddings(network, image_size=256):
    """Image features and point-prompt embeddings: they go through every converted special case."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, image_size, image_size, generator=gen)
    points = torch.tensor([[[[30.0, 40.0], [100.0, 120.0]]]])
    labels = torch.tensor([[[1, 0]]])
    with torch.inference_mode():
        feats = network.get_image_embeddings(pixels)
        sparse, dense = network.get_prompt_embeddings(input_points=points, input_labels=labels)
    return [*feats, sparse, dense]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different


def save_meta(path, network, **extra):
    torch.save({"model": checkpoints.hf_to_meta_state_dict(network.state_dict()), **extra}, path)
    return path


# --------------------------------------------------------------------------- folders

def test_folder_loads_with_identical_outputs(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    model = load_model(folder, device="cpu")
    reference = make_tiny_model(256, seed=0)

    assert isinstance(model, Sam2Model)
    assert model.device == torch.device("cpu") and model.autocast_dtype is None
    assert not model.network.training
    assert model.image_size == 256 and model.name == str(folder)
    assert_same_weights(model.network, reference)
    for got, want in zip(embeddings(model.network), embeddings(reference)):
        assert torch.equal(got, want)
    weights = (folder / "model.safetensors").read_bytes()
    assert model.info["source"] == "folder"
    assert model.info["sha256"] == hashlib.sha256(weights).hexdigest()


def test_signature_follows_the_weights(tmp_path):
    a = load_model(save_tiny_model(tmp_path / "a", seed=0))
    a_again = load_model(tmp_path / "a")
    b = load_model(save_tiny_model(tmp_path / "b", seed=1))
    assert a.signature == a_again.signature
    assert a.info["sha256"] != b.info["sha256"]
    # same place, new weights: the signature changes
    save_tiny_model(tmp_path / "a", seed=1)
    assert load_model(tmp_path / "a").signature != a.signature


def test_config_json_path_and_weights_file_load_the_folder(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    assert load_model(folder / "config.json").info["source"] == "folder"
    assert load_model(folder / "model.safetensors").info["source"] == "folder"


def test_folder_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_model(tmp_path / "missing" / "model")
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_model(tmp_path / "missing.pt")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(empty)
    torch.save({"model": {}}, empty / "sam2.1_hiera_tiny.pt")
    with pytest.raises(ModelLoadError, match="pass that file"):
        load_model(empty)

    folder = save_tiny_model(tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="'bert' model, not SAM 2"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "sam2"}))
    with pytest.raises(ModelLoadError, match="image-only"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid JSON"):
        load_model(folder)

    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="damaged"):
        load_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(folder)


def test_folder_with_incomplete_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_tiny_model(tmp_path / "tiny")
    tensors = load_file(folder / "model.safetensors")
    del tensors["mask_downsample.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing: mask_downsample.weight"):
        load_model(folder)


# --------------------------------------------------------------------------- Meta checkpoints

def test_meta_checkpoint_roundtrip(tmp_path):
    reference = tied(make_tiny_model(256, seed=3))
    path = save_meta(tmp_path / "finetuned.pt", reference, epoch=12, optimizer={"lr": 1e-4})
    model = load_model(path, config=tiny_config(256))

    assert_same_weights(model.network, reference)
    for got, want in zip(embeddings(model.network), embeddings(reference)):
        assert torch.equal(got, want)
    assert model.info["format"] == "meta" and model.info["source"] == "checkpoint"
    assert model.info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.name == str(path)


def test_meta_checkpoint_key_renaming_is_exact():
    network = make_tiny_model(256)
    meta = checkpoints.hf_to_meta_state_dict(network.state_dict())
    assert all(k.split(".")[0] in META_TOP_LEVEL for k in meta)
    back, unmapped = checkpoints.meta_to_hf_state_dict(meta)
    assert unmapped == []
    assert set(back) == set(network.state_dict())


@pytest.fixture(scope="module")
def released_tiny(tmp_path_factory):
    """A random network of the released SAM 2.1 tiny architecture, saved as Meta's .pt."""
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    network = tied(Sam2VideoModel(checkpoints.variant_config("tiny")).eval())
    path = save_meta(tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny.pt", network)
    return network, path


def test_meta_checkpoint_infers_the_released_config(released_tiny):
    reference, path = released_tiny
    model = load_model(path)
    assert model.info["variant"] == "sam2.1-tiny"
    assert model.network.config.to_dict() == reference.config.to_dict()
    assert_same_weights(model.network, reference)


def test_meta_checkpoint_at_another_input_size(released_tiny):
    # MedSAM2 fine-tunes SAM 2.1 tiny at 512 px; the size is not in the weights
    reference, path = released_tiny
    model = load_model(path, image_size=512)
    assert model.image_size == 512
    assert model.network.config.vision_config.backbone_feature_sizes == [[128, 128], [64, 64], [32, 32]]
    assert list(model.network.config.memory_attention_rope_feat_sizes) == [32, 32]
    assert_same_weights(model.network, reference)
    features = embeddings(model.network, image_size=512)
    assert features[2].shape == (1, 256, 32, 32)
    with pytest.raises(ModelLoadError, match="multiple of 64"):
        load_model(path, image_size=500)


@pytest.mark.parametrize("variant", list(checkpoints.VARIANTS))
@pytest.mark.parametrize("sam21", [True, False], ids=["2.1", "2.0"])
def test_config_inference_for_every_released_size(variant, sam21):
    from transformers import Sam2VideoModel

    config = checkpoints.variant_config(variant, sam21=sam21)
    with torch.device("meta"):  # shapes only, no memory
        network = Sam2VideoModel(config)
    meta = checkpoints.hf_to_meta_state_dict(network.state_dict())
    assert ("no_obj_embed_spatial" in meta) == sam21
    converted, unmapped = checkpoints.meta_to_hf_state_dict(meta)
    assert not unmapped
    inferred, description = checkpoints.infer_config(converted)
    assert description == f"sam2{'.1' if sam21 else ''}-{variant}"
    assert inferred.to_dict() == config.to_dict()


def meta_sam21_tiny_inventory() -> dict[str, tuple]:
    """Tensor names and shapes of Meta's ``sam2.1_hiera_tiny.pt``, written out by hand.

    From facebookresearch/sam2's modules (Hiera ``MultiScaleBlock``/``MultiScaleAttention``/
    ``PatchEmbed``, ``FpnNeck``, ``PromptEncoder``, ``MaskDecoder``/``TwoWayTransformer``,
    ``MemoryAttention``/``RoPEAttention``, ``MemoryEncoder``/``MaskDownSampler``/``CXBlock``,
    ``SAM2Base``) and the 309-tensor inventory of everything outside the image encoder that
    NVIDIA's SAM 2 tracker validates checkpoints against. Independent of the conversion table.
    """
    inv: dict[str, tuple] = {}

    def lin(name, n_in, n_out):
        inv[f"{name}.weight"], inv[f"{name}.bias"] = (n_out, n_in), (n_out,)

    def norm(name, c):
        inv[f"{name}.weight"], inv[f"{name}.bias"] = (c,), (c,)

    def conv(name, c_in, c_out, k):
        inv[f"{name}.weight"], inv[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def attention(name, q_in, kv_in, inner):
        lin(f"{name}.q_proj", q_in, inner)
        lin(f"{name}.k_proj", kv_in, inner)
        lin(f"{name}.v_proj", kv_in, inner)
        lin(f"{name}.out_proj", inner, 256)

    # Hiera-T: stages (1, 2, 7, 2), width 96 doubling at each stage's first block
    t = "image_encoder.trunk"
    inv[f"{t}.pos_embed"], inv[f"{t}.pos_embed_window"] = (1, 96, 7, 7), (1, 96, 8, 8)
    conv(f"{t}.patch_embed.proj", 3, 96, 7)
    dim, starts = 96, {1, 3, 10}
    for i in range(12):
        out = dim * 2 if i in starts else dim
        b = f"{t}.blocks.{i}"
        norm(f"{b}.norm1", dim)
        lin(f"{b}.attn.qkv", dim, 3 * out)
        lin(f"{b}.attn.proj", out, out)
        norm(f"{b}.norm2", out)
        lin(f"{b}.mlp.layers.0", out, 4 * out)
        lin(f"{b}.mlp.layers.1", 4 * out, out)
        if out != dim:
            lin(f"{b}.proj", dim, out)
        dim = out
    for i, c in enumerate([768, 384, 192, 96]):
        conv(f"image_encoder.neck.convs.{i}.conv", c, 256, 1)
    n_image_encoder = len(inv)

    inv["maskmem_tpos_enc"] = (7, 1, 1, 64)
    inv["no_mem_embed"] = inv["no_mem_pos_enc"] = (1, 1, 256)
    inv["no_obj_ptr"], inv["no_obj_embed_spatial"] = (1, 256), (1, 64)
    for layer in range(4):
        m = f"memory_attention.layers.{layer}"
        attention(f"{m}.self_attn", 256, 256, 256)
        attention(f"{m}.cross_attn_image", 256, 64, 256)
        lin(f"{m}.linear1", 256, 2048)
        lin(f"{m}.linear2", 2048, 256)
        for k in (1, 2, 3):
            norm(f"{m}.norm{k}", 256)
    norm("memory_attention.norm", 256)
    for index, c_in, c_out in [(0, 1, 4), (3, 4, 16), (6, 16, 64), (9, 64, 256)]:
        conv(f"memory_encoder.mask_downsampler.encoder.{index}", c_in, c_out, 3)
        norm(f"memory_encoder.mask_downsampler.encoder.{index + 1}", c_out)
    conv("memory_encoder.mask_downsampler.encoder.12", 256, 256, 1)
    conv("memory_encoder.pix_feat_proj", 256, 256, 1)
    for layer in range(2):
        f = f"memory_encoder.fuser.layers.{layer}"
        inv[f"{f}.gamma"] = (256,)
        inv[f"{f}.dwconv.weight"], inv[f"{f}.dwconv.bias"] = (256, 1, 7, 7), (256,)
        norm(f"{f}.norm", 256)
        lin(f"{f}.pwconv1", 256, 1024)
        lin(f"{f}.pwconv2", 1024, 256)
    conv("memory_encoder.out_proj", 256, 64, 1)
    p = "sam_prompt_encoder"
    inv[f"{p}.pe_layer.positional_encoding_gaussian_matrix"] = (2, 128)
    for i in range(4):
        inv[f"{p}.point_embeddings.{i}.weight"] = (1, 256)
    inv[f"{p}.not_a_point_embed.weight"] = inv[f"{p}.no_mask_embed.weight"] = (1, 256)
    conv(f"{p}.mask_downscaling.0", 1, 4, 2)
    norm(f"{p}.mask_downscaling.1", 4)
    conv(f"{p}.mask_downscaling.3", 4, 16, 2)
    norm(f"{p}.mask_downscaling.4", 16)
    conv(f"{p}.mask_downscaling.6", 16, 256, 1)
    d = "sam_mask_decoder"
    for layer in range(2):
        x = f"{d}.transformer.layers.{layer}"
        attention(f"{x}.self_attn", 256, 256, 256)
        norm(f"{x}.norm1", 256)
        attention(f"{x}.cross_attn_token_to_image", 256, 256, 128)
        norm(f"{x}.norm2", 256)
        lin(f"{x}.mlp.layers.0", 256, 2048)
        lin(f"{x}.mlp.layers.1", 2048, 256)
        norm(f"{x}.norm3", 256)
        norm(f"{x}.norm4", 256)
        attention(f"{x}.cross_attn_image_to_token", 256, 256, 128)
    attention(f"{d}.transformer.final_attn_token_to_image", 256, 256, 128)
    norm(f"{d}.transformer.norm_final_attn", 256)
    inv[f"{d}.iou_token.weight"], inv[f"{d}.mask_tokens.weight"] = (1, 256), (4, 256)
    inv[f"{d}.obj_score_token.weight"] = (1, 256)
    inv[f"{d}.output_upscaling.0.weight"], inv[f"{d}.output_upscaling.0.bias"] = (256, 64, 2, 2), (64,)
    norm(f"{d}.output_upscaling.1", 64)
    inv[f"{d}.output_upscaling.3.weight"], inv[f"{d}.output_upscaling.3.bias"] = (64, 32, 2, 2), (32,)
    conv(f"{d}.conv_s0", 256, 32, 1)
    conv(f"{d}.conv_s1", 256, 64, 1)
    for i in range(4):
        for j, n_out in enumerate([256, 256, 32]):
            lin(f"{d}.output_hypernetworks_mlps.{i}.layers.{j}", 256, n_out)
    for head, n_out in [("iou_prediction_head", 4), ("pred_obj_score_head", 1)]:
        for j, width in enumerate([256, 256, n_out]):
            lin(f"{d}.{head}.layers.{j}", 256, width)
    conv("mask_downsample", 1, 1, 4)
    for j in range(3):
        lin(f"obj_ptr_proj.layers.{j}", 256, 256)
    lin("obj_ptr_tpos_proj", 256, 64)
    assert len(inv) - n_image_encoder == 309
    return inv


META_TOP_LEVEL = {
    "image_encoder", "memory_attention", "memory_encoder", "sam_prompt_encoder", "sam_mask_decoder",
    "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
    "mask_downsample", "obj_ptr_proj", "obj_ptr_tpos_proj",
}


def test_conversion_covers_metas_tiny_checkpoint():
    from transformers import Sam2VideoModel

    reference = meta_sam21_tiny_inventory()
    with torch.device("meta"):
        network = Sam2VideoModel(checkpoints.variant_config("tiny"))
    produced = checkpoints.hf_to_meta_state_dict(network.state_dict())
    assert set(produced) == set(reference), set(produced) ^ set(reference)
    assert {k: tuple(v.shape) for k, v in produced.items()} == reference

    # and Meta's names, read the other way, fill the transformers model exactly
    fake = {k: torch.empty(shape, device="meta") for k, shape in reference.items()}
    converted, unmapped = checkpoints.meta_to_hf_state_dict(fake)
    assert unmapped == []
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in network.state_dict().items()
    }


def test_checkpoint_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(10_000))
    with pytest.raises(ModelLoadError, match="could not be read as a PyTorch checkpoint"):
        load_model(corrupt)
    # bytes that read as pickle protocol 35: only the clear error, no warning from torch first
    corrupt.write_bytes(b"\x80\x23" + bytes(range(256)) * 8)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(ModelLoadError, match="could not be read as a PyTorch checkpoint"):
            load_model(corrupt)
    assert not [str(w.message) for w in shown if "pickle" in str(w.message)]

    other = tmp_path / "other.pt"
    torch.save({"model": {"encoder.layer.0.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(ModelLoadError, match="not a SAM 2 checkpoint"):
        load_model(other)

    no_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], no_dict)
    with pytest.raises(ModelLoadError, match="does not contain a model state dict"):
        load_model(no_dict)

    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": UnsafeObject()}, pickled)
    with pytest.raises(ModelLoadError, match="Python objects besides tensors"):
        load_model(pickled)

    network = tied(make_tiny_model(256))
    meta = checkpoints.hf_to_meta_state_dict(network.state_dict())
    del meta["sam_mask_decoder.conv_s0.weight"]
    meta["sam_mask_decoder.extra_head.weight"] = torch.zeros(2)
    broken = tmp_path / "broken.pt"
    torch.save({"model": meta}, broken)
    with pytest.raises(ModelLoadError, match="1 missing: mask_decoder.conv_s0.weight") as info:
        load_model(broken, config=tiny_config(256))
    assert "1 unexpected: sam_mask_decoder.extra_head.weight" in str(info.value)

    # the tiny test architecture is none of the released sizes: say how to load it
    save_meta(tmp_path / "tiny.pt", network)
    with pytest.raises(ModelLoadError, match="config="):
        load_model(tmp_path / "tiny.pt")
    with pytest.raises(ModelLoadError, match="contradicts"):
        load_model(tmp_path / "tiny.pt", config=tiny_config(256), image_size=512)


class UnsafeObject:
    """Anything that is not a tensor or a plain container: needs full unpickling."""


def test_state_dict_variants_are_read(tmp_path):
    network = tied(make_tiny_model(256))
    meta = checkpoints.hf_to_meta_state_dict(network.state_dict())
    # a bare state dict saved from DistributedDataParallel, and a safetensors file of it
    torch.save({f"module.{k}": v for k, v in meta.items()}, tmp_path / "ddp.pth")
    assert set(checkpoints.read_state_dict(tmp_path / "ddp.pth")) == set(meta)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, tmp_path / "hf.safetensors")
    model = load_model(tmp_path / "hf.safetensors", config=tiny_config(256))
    assert model.info["format"] == "transformers"
    assert_same_weights(model.network, network)


# --------------------------------------------------------------------------- the hub

def fake_hub_cache(cache, folder, repo_id="facebook/sam2.1-hiera-tiny"):
    """Lay out ``folder``'s files the way huggingface_hub caches a download."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_short_name_loads_from_the_cache_offline(tmp_path, offline):
    folder = save_tiny_model(tmp_path / "tiny")
    fake_hub_cache(tmp_path / "cache", folder)
    for name in ("sam2.1-tiny", "tiny", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny"):
        model = load_model(name, cache_dir=tmp_path / "cache")
        assert model.name == "sam2.1-tiny"
        assert model.info["source"] == "hub" and model.info["revision"] == COMMIT
        assert model.info["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        assert_same_weights(model.network, make_tiny_model(256))


def test_local_files_only_without_offline_env(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    fake_hub_cache(tmp_path / "cache", save_tiny_model(tmp_path / "tiny"))
    model = load_model("sam2.1-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    assert model.info["revision"] == COMMIT


def test_short_name_offline_and_not_cached_says_what_to_do(tmp_path, offline):
    with pytest.raises(ModelLoadError) as info:
        load_model("sam2.1-small", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "connect to the internet once" in message
    assert "hf download facebook/sam2.1-hiera-small" in message
    assert "load_model('/path/to/sam2.1-small')" in message
    assert "HF_HOME" in message
    assert str(tmp_path / "cache") in message


def test_incomplete_cached_download(tmp_path, offline):
    folder = save_tiny_model(tmp_path / "tiny")
    (folder / "model.safetensors").unlink()
    fake_hub_cache(tmp_path / "cache", folder)
    with pytest.raises(ModelLoadError, match="no weights.*load it again with internet access"):
        load_model("sam2.1-tiny", cache_dir=tmp_path / "cache")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ModelLoadError) as info:
        load_model("sam2.1-huge")
    assert all(name in str(info.value) for name in MODEL_IDS)


def test_download_progress_reaches_the_callback(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    calls = []

    def fake_snapshot_download(repo_id, *, tqdm_class, allow_patterns, **kwargs):
        if allow_patterns == ["config.json"]:  # read first: can this install build the model?
            return str(folder)
        # how huggingface_hub drives tqdm_class: a file counter, a network-bytes bar with an
        # estimated total and a bar of the bytes written, whose total grows per file
        assert "config.json" in allow_patterns and "*.safetensors" in allow_patterns
        with tqdm_class(desc="Fetching 2 files", total=2) as files:
            transfer = tqdm_class(desc="Downloading bytes", total=0, initial=0, unit="B", unit_scale=True)
            written = tqdm_class(desc="Reconstructing (incomplete total...)", total=0, unit="B")
            for size in (1000, 3000):
                written.total = (written.total or 0) + size
                written.refresh()
                transfer.update(size // 3)
                written.update(size // 2)
                written.update(size - size // 2)
                written.set_postfix_str("1 MB/s", refresh=False)
                files.update(1)
            written.set_description("Reconstruction complete")
            written.close()
        return str(folder)

    result = download_from_hub(
        "facebook/sam2.1-hiera-tiny", name="sam2.1-tiny", report=Reporter(lambda *a: calls.append(a)),
        download=fake_snapshot_download,
    )
    assert result == folder
    byte_calls = [(done, total) for done, total, _ in calls if total]
    assert byte_calls == [(500, 1000), (1000, 1000), (2500, 4000), (4000, 4000)]
    assert all("facebook/sam2.1-hiera-tiny" in message for *_, message in calls)
    assert calls[0][:2] == (0, 0)  # the first message comes before any download


def test_progress_exception_cancels_unchanged(tmp_path):
    class Cancelled(Exception):
        pass

    def fake_snapshot_download(repo_id, *, tqdm_class, **kwargs):
        bar = tqdm_class(desc="Reconstructing", total=100, unit="B")
        bar.update(10)
        return str(tmp_path)

    def stop(done, total, message):
        if done:
            raise Cancelled

    with pytest.raises(Cancelled):
        download_from_hub("facebook/sam2.1-hiera-tiny", name="sam2.1-tiny", report=Reporter(stop),
                           download=fake_snapshot_download)


def test_progress_during_a_local_load(tmp_path):
    calls = []
    load_model(save_tiny_model(tmp_path / "tiny"), progress=lambda *a: calls.append(a))
    assert any("Loading weights" in message for *_, message in calls)
    with pytest.raises(ModelLoadError, match="progress must be a callable"):
        load_model(tmp_path / "tiny", progress="yes")


# --------------------------------------------------------------------------- devices and instances

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    with pytest.raises(ModelLoadError, match="device 'cuda' was requested.*choose device 'auto'"):
        load_model(folder, device="cuda")


def test_bad_device_and_dtype(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    with pytest.raises(ModelLoadError, match="unknown device 'gpu0'"):
        load_model(folder, device="gpu0")
    if not torch.backends.mps.is_available():
        with pytest.raises(ModelLoadError, match="MPS"):
            load_model(folder, device="mps")
    with pytest.raises(ModelLoadError, match="unsupported dtype"):
        load_model(folder, dtype="int8")


def test_auto_device_and_precision(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    model = load_model(folder)
    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if mps else "cpu")
    assert model.device.type == expected
    assert all(p.device.type == expected for p in model.network.parameters())
    if expected == "cuda" and torch.cuda.is_bf16_supported():
        assert model.autocast_dtype == torch.bfloat16
    # an explicit precision (here bfloat16 autocast on the CPU) is entered by inference()
    bf16 = load_model(folder, device="cpu", dtype="bfloat16")
    assert bf16.autocast_dtype == torch.bfloat16
    assert bf16.signature != load_model(folder, device="cpu").signature
    with bf16.inference():
        assert torch.is_inference_mode_enabled() and torch.is_autocast_enabled("cpu")


def test_instances_pass_through(tiny_model):
    wrapped = load_model(tiny_model)
    assert wrapped.network is tiny_model and wrapped.device == torch.device("cpu")
    assert load_model(wrapped) is wrapped
    with pytest.raises(ModelLoadError, match="checkpoint files"):
        load_model(tiny_model, image_size=512)
    with pytest.raises(ModelLoadError, match="takes a model name"):
        load_model(42)


# --------------------------------------------------------------------------- families

@pytest.mark.parametrize("family, names, repo_id", [
    ("sam3", ("sam3", "SAM3", "sam3-tracker", "facebook/sam3"), "facebook/sam3"),
    ("edgetam", ("edgetam", "edge-tam"), "yonigozlan/EdgeTAM-hf"),
])
def test_family_short_names_load_from_the_cache(tmp_path, offline, family, names, repo_id):
    folder = save_tiny_model(tmp_path / family, family=family)
    fake_hub_cache(tmp_path / "cache", folder, repo_id=repo_id)
    for name in names:
        model = load_model(name, cache_dir=tmp_path / "cache")
        assert model.family.key == family and model.info["repo_id"] == repo_id
        assert_same_weights(model.network, make_tiny_model(family=family))


def test_a_gated_repository_says_how_to_get_access(tmp_path):
    from huggingface_hub import errors

    def gated(repo_id, **kwargs):
        response = type("R", (), {"headers": {}, "status_code": 403, "url": "", "request": None})()
        raise errors.GatedRepoError("Access to model facebook/sam3 is restricted.", response=response)

    with pytest.raises(ModelLoadError) as info:
        download_from_hub("facebook/sam3", name="sam3", report=Reporter(None), download=gated,
                           local_files_only=False)
    message = str(info.value)
    assert "request access on the model page (https://huggingface.co/facebook/sam3)" in message
    assert "`hf auth login`" in message and "\n" not in message


def test_family_of_every_loaded_model(tmp_path):
    for family in ("sam2", "sam3", "edgetam"):
        model = load_model(make_tiny_model(family=family), device="cpu")
        assert model.family.key == family
        assert model.mask_size == {"sam2": 64, "sam3": 64, "edgetam": 64}[family]
        assert family in model.signature
    with pytest.raises(TypeError, match="not a video model of a known family"):
        Sam2Model(network=torch.nn.Linear(2, 2), device=torch.device("cpu"))
