"""Every example in the docstrings of what ``famegui`` exports runs and prints what it says (doctest)."""
import doctest
import importlib

import pytest

MODULES = ("famegui", "famegui.api.core", "famegui.api.views", "famegui.explanation", "famegui.evaluation.locality",
           "famegui.evaluation.regions")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch, qtbot):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name, globs={}) if t.examples]
    assert tests or name == "famegui.evaluation.locality", f"{name} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
