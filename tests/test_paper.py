"""The paper's published numbers are stored whole and stay labelled as the paper's."""

from nsdlib import names, paper


def test_tables_complete_and_labelled():
    for name, rows in [("4", 5), ("5", 6), ("6", 6), ("other", 2), ("2", 3), ("3", 2)]:
        df = paper.table(name)
        assert len(df) == rows and (df["source"] == "paper").all()
    t6 = paper.table(6).set_index("noise")
    assert list(t6.index) == list(names.NOISE_LEVELS)
    assert t6.loc["256", "ssim"] == 0.140 and t6.loc["none", "swav"] == 0.434
    t4 = paper.table(4)
    gru31 = t4[(t4.label == "GRU") & (t4.n_layers == 31)].iloc[0]
    assert gru31["clip"] == 0.958
    assert paper.table(3).set_index("regressor").loc["ridge", "test_mse"] == 0.0690
    mindeye = paper.OTHER_SYSTEMS[1]
    assert mindeye["alexnet2"] == 0.961 and mindeye["pixcorr"] == 0.322


def test_unknown_table():
    import pytest

    with pytest.raises(KeyError, match="tables 2, 3, 4, 5, 6"):
        paper.table(7)
