import json


def test_fixture_models_reach_reasonable_accuracy(trained_runs):
    for path in (trained_runs.teacher_t1, trained_runs.teacher_t100, trained_runs.student_t100):
        meta = json.loads((path / "meta.json").read_text())
        assert meta["clean_acc"] > 0.9, (path.name, meta["clean_acc"])
