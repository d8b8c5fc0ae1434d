"""The field's way, as its users write it: pytorch-toolbelt's ImageSlicer + TileMerger over a
whole scene held in memory, the same model, tiles, batch and normalization as geoseg, the
argmax written as a GeoTIFF. Run as a process (start-up included) by bench_throughput, with
pytorch-toolbelt installed in the benchmark's own folder (``pip install --target``), not in
geoseg's environment.

    PYTHONPATH=benchmarks/work/toolbelt:. python -m benchmarks.toolbelt_child SCENE MODEL OUT
        BATCH THREADS
"""

from __future__ import annotations

import json
import sys
import time


def main(scene: str, model: str, out: str, batch: str, threads: str) -> dict:
    import numpy as np
    import rasterio
    import torch
    from pytorch_toolbelt import __version__
    from pytorch_toolbelt.inference.tiles import ImageSlicer, TileMerger

    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    from geoseg.model import read_meta

    torch.set_num_threads(int(threads))
    # the network as a toolbelt user builds it: smp's model, the weights loaded, eval mode
    meta = read_meta(model)
    net = smp.create_model(meta.arch, encoder_name=meta.encoder, encoder_weights=None,
                           in_channels=meta.in_channels, classes=len(meta.classes),
                           **meta.arch_kwargs)
    net.load_state_dict(load_file(model))
    net.eval()
    size, overlap = meta.tile_size, meta.overlap
    with rasterio.open(scene) as ds:
        image = ds.read().transpose(1, 2, 0)  # HWC, the layout ImageSlicer takes
        profile = dict(driver="GTiff", height=ds.height, width=ds.width, count=1,
                       dtype="uint8", crs=ds.crs, transform=ds.transform, tiled=True,
                       compress="deflate")
    scale = np.asarray(meta.scale, np.float32)
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    slicer = ImageSlicer(image.shape, tile_size=size, tile_step=size - overlap,
                         weight="pyramid")
    merger = TileMerger(slicer.target_shape, len(meta.classes), slicer.weight)
    tiles = [(tile * scale - mean) / std for tile in slicer.split(image)]
    with torch.inference_mode():
        for i in range(0, len(tiles), int(batch)):
            x = torch.from_numpy(np.stack(tiles[i:i + int(batch)]).astype(np.float32))
            probs = torch.softmax(net(x.permute(0, 3, 1, 2).contiguous()), dim=1)
            merger.integrate_batch(probs, slicer.crops[i:i + int(batch)])
    merged = merger.merge().argmax(dim=0).to(torch.uint8).numpy()
    classes = slicer.crop_to_orignal_size(merged[..., None])[..., 0]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes[None])
    return {"tiles": len(tiles), "version": __version__}


if __name__ == "__main__":
    start = time.perf_counter()
    result = main(*sys.argv[1:])
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result))
