"""Shared, tested code of the course *Deep Learning for Medical Imaging Big Data*.

Modules
-------
- :mod:`utils.course`    notebook set-up: profiles, seeds, determinism, environment facts
- :mod:`utils.data`      dataset registry, checksummed resolution and downloads, loaders
- :mod:`utils.metrics`   ACC/AUC (MedMNIST protocol), sensitivity, specificity, bootstrap CIs, ECE
- :mod:`utils.reference` NumPy convolution, pooling and attention, checked against Keras layers
- :mod:`utils.classify`  chapter 2 models, training recipe and Grad-CAM (backend-dispatched gradients)
- :mod:`utils.segment`   U-Net / Attention U-Net, Dice losses, Dice/IoU/HD95, leak-free tiling, nuclei loader
- :mod:`utils.detect`    chapter 4 heat-map detector, focal losses, FROC, COCO mAP, blob baseline
- :mod:`utils.gan`       chapter 5 DCGAN, Fréchet distance, precision/recall, memorisation check
- :mod:`utils.quality`   chapter 6 label noise, imbalance methods, dataset audits
- :mod:`utils.scale`     chapter 6 sharded tf.data streaming, memory and throughput, distribution
- :mod:`utils.privacy`   chapter 6 DICOM de-identification (PS3.15), FedAvg, DP-SGD with its ε
- :mod:`utils.membership` membership-inference audits (loss-threshold attack, AUC bound under DP)
- :mod:`utils.imaging`   DICOM / NIfTI / NRRD helpers: Hounsfield units, windowing, header audit
- :mod:`utils.phantoms`  deterministic synthetic images with exact labels, masks and boxes
- :mod:`utils.tables`    Markdown tables for notebook output (shared by the chapters)
- :mod:`utils.memory`    the one memory sampler (a chapter's kernel, chapter 6's streaming test)
- :mod:`utils.files`     the one atomic writer (downloads, run report, run cache)
- :mod:`utils.report`    metrics and timings a notebook reports to the run report
- :mod:`utils.exercises` automatic exercise checks (pass/fail, never the answer)
- :mod:`utils.checks`    each chapter's exercise checks (``checks.ch1`` … ``ch6``), each unit-tested
- :mod:`utils.run`       papermill runner that executes every chapter (``python -m utils.run``)
- :mod:`utils.book`      assembles and builds the Jupyter Book (``python -m utils.book``)
- :mod:`utils.student`   student edition without solutions (``python -m utils.student``)
- :mod:`utils.grade`     grades a class's returned notebooks (``python -m utils.grade``)

Submodules are imported lazily so that ``import utils`` stays cheap.
"""

__version__ = "0.1.0"
