from zoneinit.boot.cmdline import parse_cmdline, read_cmdline, split_cmdline


def test_split_handles_quotes_and_spaces():
    assert split_cmdline('  a=1  b="x y"  "c=d e" f\n') == ["a=1", "b=x y", "c=d e", "f"]


def test_zone_keys_are_parsed():
    c = parse_cmdline(
        "console=ttyS0 quiet zone.config=/dev/vdb zone.idm=/dev/vport0p1 zone.addons=/dev/vda "
        "zone.modules=vfat,dummy zone.modules=nls-utf8 zone.debug"
    )
    assert c.config == "/dev/vdb"
    assert c.idm == "/dev/vport0p1"
    assert c.addons == "/dev/vda"
    assert c.modules == ["vfat", "dummy", "nls-utf8"]
    assert c.debug is True
    assert c.poweroff_on_exit is None
    assert c.other == {"console": "ttyS0", "quiet": ""}
    assert c.unknown == {}


def test_flags_and_unknown_keys():
    c = parse_cmdline("zone.debug=0 zone.poweroff=1 zone.frobnicate=yes")
    assert c.debug is False
    assert c.poweroff_on_exit is True
    assert c.unknown == {"zone.frobnicate": "yes"}


def test_empty_and_missing(tmp_path):
    c = parse_cmdline("")
    assert c.config is None and c.idm is None and c.modules == [] and not c.debug
    assert read_cmdline(str(tmp_path / "nope")).config is None
    (tmp_path / "cmdline").write_text("zone.config=/dev/vdc\n")
    assert read_cmdline(str(tmp_path / "cmdline")).config == "/dev/vdc"


def test_real_proc_cmdline_parses():
    read_cmdline()  # whatever the host booted with must not raise
