"""The Python examples of docs/api.md run as written (on tiny settings), and the docs the README links exist."""
import os
import re

import numpy as np

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")

TINY_SETTINGS = [  # (text in docs/api.md, what the test runs instead): a real run's values, a seconds-long run here
    ("number_of_iterations=4000", "number_of_iterations=3"),
    ('"min_buffer_frames": 12000', '"min_buffer_frames": 10'),
    ('"n_steps": 500, "stream_stride": 250', '"n_steps": 20, "stream_stride": 10'),
    ('"width": 128', '"width": 16'),
    ("checkpoint_interval=50", "checkpoint_interval=1"),
]


def python_blocks(name):
    with open(os.path.join(DOCS, name)) as stream:
        return re.findall(r"```python\n(.*?)```", stream.read(), re.S)


def test_the_api_page_drop_in_and_resume_examples_run_and_the_model_trains(tmp_path, monkeypatch):
    """The drop-in script makes a storage whose run resumes with its learner, and load_run finds a trained model."""
    from openmmtools import cache

    cache.global_context_cache.empty()
    monkeypatch.chdir(tmp_path)
    create, resume = python_blocks("api.md")[:2]  # the drop-in and resume examples; later blocks are fragments
    for text, tiny in TINY_SETTINGS:
        assert text in create, f"docs/api.md no longer holds {text!r}: update TINY_SETTINGS"
        create = create.replace(text, tiny)
    exec(compile(create, "docs/api.md (drop-in)", "exec"), {})
    namespace = {}
    exec(compile(resume, "docs/api.md (resume)", "exec"), namespace)
    assert namespace["run"].iteration == 5  # 3 + the 2 of extend: the resumed run checkpointed its learner
    assert np.all(namespace["statistics"]["ddpm_training_loss"][1:] > 0)  # it trained on every iteration's frames


def test_every_doc_the_readme_links_exists():
    with open(os.path.join(DOCS, os.pardir, "README.md")) as stream:
        links = re.findall(r"\]\((docs/[^)#]+)", stream.read())
    assert {"docs/quickstart.md", "docs/method.md", "docs/api.md", "docs/report.md", "docs/faq.md"} <= set(links)
    for link in links:
        assert os.path.exists(os.path.join(DOCS, os.pardir, link)), link
