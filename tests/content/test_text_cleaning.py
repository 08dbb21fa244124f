"""MAP-CC text cleaning: each rule on hand-made Chinese / English lines, dedup, the CLI.

Fixtures are written in code (hand-made sentences), no dataset is read.
"""

from __future__ import annotations

import json

import pytest

from reelrec.cli.clean_text import main as clean_main
from reelrec.cli.clean_text import parse_overrides, read_documents
from reelrec.config import ConfigError
from reelrec.content.text_cleaning import (
    CAPTIONS,
    RULES,
    CleaningConfig,
    TextCleaner,
    char_entropy,
    dup_ngram_share,
    remove_similar_segments,
    top_ngram_share,
)
from reelrec.data.readers import DataFormatError

GOOD = (
    "今年春天，我们在山区小学开展了为期三个月的阅读推广活动。"
    "孩子们每天放学后都会来到图书角，挑选自己喜欢的故事书。"
    "老师们说，学生的写作能力和表达能力都有了明显的提高。"
)
GOOD_2 = (
    "这家面馆开在老城区的一条小巷里，已经经营了二十多年。"
    "老板每天凌晨四点起床熬汤，汤底浓郁却不油腻。"
    "很多外地游客专门慕名而来，排队一个小时也心甘情愿。"
)
GOOD_3 = (
    "秋天的果园里，苹果和梨挂满了枝头，果农们忙着采摘和装箱。"
    "今年雨水充足，果子个头大、甜度高，收购价格也比去年上涨了不少。"
    "村里新修的冷库让水果可以保存更久，销路一直延伸到了南方的大城市。"
    "合作社还请来了电商主播，在田间地头直播卖货，订单一天比一天多。"
)
JAPANESE = (
    "今年の春、私たちは山間部の小学校で三か月間の読書推進活動を行いました。"
    "子どもたちは毎日放課後に図書コーナーに来て、好きな物語の本を選びます。"
    "先生たちは、生徒の作文力と表現力が明らかに向上したと言っています。"
)
ENGLISH = (
    "The library opened a new reading room this spring. Children come every afternoon to "
    "choose a story book. Teachers say their writing has clearly improved since then."
)


@pytest.fixture(scope="module")
def cleaner() -> TextCleaner:
    return TextCleaner()


def test_good_chinese_documents_pass(cleaner):
    assert cleaner.failed_rule(GOOD) is None
    assert cleaner.failed_rule(GOOD_2) is None


@pytest.mark.parametrize(
    "text, rule",
    [
        ("【广告】【推荐】【热门】【转发】【点赞】【关注】" + GOOD[:40], "bracket_ratio"),
        ("这是一段没有句号的很长很长的文字但是只有一个句子而已" * 3, "sentences"),
        ("今天很好。明天也好。", "length"),
        ("好" + "。一" * 2000 + GOOD * 100, "length"),
        ("#话题# " * 12 + GOOD[:60], "hash_ratio"),
        ("这个……那个……然后……所以……" * 3 + GOOD[:50], "ellipsis_ratio"),
        (
            "订单号1234567890，电话13800138000。金额9876543210元，编号5555。" + GOOD[:30],
            "digit_ratio",
        ),
        (
            "\n".join(
                ["今天的新闻摘要，点击展开", "明星八卦最新消息更多", "体育赛事精彩回放展开"]
                + [GOOD[:30]]
            ),
            "read_more_lines",
        ),
        (
            "\n".join(
                [
                    "• 第一条新闻内容。",
                    "• 第二条新闻内容。",
                    "• 第三条新闻内容。",
                    "• 第四条新闻内容。",
                    "• 第五条新闻内容。" + GOOD[:40],
                ]
            ),
            "bullet_lines",
        ),
        ("你好我好大家好" * 10 + "!" + "谢谢" * 5 + "!", "unique_chars"),
        # 3 nats is above the entropy of English letters (about 2.9): English fails it
        (ENGLISH, "char_entropy"),
    ],
)
def test_each_rule_drops_its_case(cleaner, text, rule):
    assert cleaner.failed_rule(text) == rule


def test_no_punctuation_and_entropy_and_word_length():
    # rules switched on one at a time by loosening the ones before them
    loose = dict(min_sentences=1, min_chars=5)
    c = TextCleaner(CleaningConfig(**loose))
    assert c.failed_rule("今天天气很好我们一起去公园散步然后回家吃饭睡觉") == "no_punctuation"
    c = TextCleaner(CleaningConfig(**loose, min_unique_char_ratio=0.0))
    assert c.failed_rule("啊啊啊啊哦哦哦哦，啊啊哦哦啊啊哦哦。") == "char_entropy"
    c = TextCleaner(CleaningConfig(**loose, min_mean_word_length=3.0))
    assert c.failed_rule("我和你，他和她。") == "mean_word_length"


def test_english_document_passes_when_english_is_accepted():
    c = TextCleaner(CleaningConfig(languages=("zh", "en"), min_char_entropy=2.5))
    assert c.failed_rule(ENGLISH) is None
    c = TextCleaner(CleaningConfig(min_char_entropy=2.5))
    assert c.failed_rule(ENGLISH) == "language"
    # jieba cuts kana one character at a time: Japanese needs shorter words to reach the check
    assert TextCleaner().failed_rule(JAPANESE) == "mean_word_length"
    c = TextCleaner(CleaningConfig(min_mean_word_length=1.0))
    assert c.failed_rule(JAPANESE) == "language"


def test_repetition_measures_by_hand():
    assert top_ngram_share("abababab", 2) == pytest.approx((4 - 1) * 2 / 8)
    assert top_ngram_share("abcd", 2) == 0.0
    # "abcde" then the same 5-gram again: the second occurrence (5 of 10 chars) is duplicated
    assert dup_ngram_share("abcdeabcde", 5) == pytest.approx(0.5)
    assert dup_ngram_share("abcdefghij", 5) == 0.0
    assert char_entropy("aaaa") == 0.0
    assert char_entropy("ab") == pytest.approx(0.6931, abs=1e-4)


def test_repeated_ngrams_drop_a_document(cleaner):
    spam = GOOD[:40] + "点赞关注转发，欢迎大家多多支持！" * 8
    assert cleaner.failed_rule(spam) == "ngram_repetition"


def test_corpus_dedup_exact_and_near_and_first_kept():
    # LSH with 9 bands x 13 rows catches 13-gram Jaccard above about 0.85: one character
    # changed in a 330-character document gives about 0.93
    long = GOOD + GOOD_2 + GOOD_3
    near = long.replace("三个月", "四个月")
    docs = [long, GOOD_2, long, near, "太短。真的。"]
    kept, report = TextCleaner().clean(docs)
    assert [i for i, _ in kept] == [0, 1]
    assert report.dropped["exact_duplicate"] == 1
    assert report.dropped["near_duplicate"] == 1
    assert report.dropped["length"] == 1
    assert report.docs == 5 and report.kept == 2
    assert set(report.dropped) == set(RULES)
    assert report.drop_rate["exact_duplicate"] == pytest.approx(0.2)


def test_dedup_can_be_switched_off():
    near = GOOD.replace("三个月", "四个月")
    cfg = CleaningConfig(exact_dedup=False, near_dedup=False)
    kept, _ = TextCleaner(cfg).clean([GOOD, GOOD, near])
    assert len(kept) == 3


def test_similar_segments_inside_a_document_are_removed():
    line = "这家面馆开在老城区的一条小巷里，已经经营了二十多年。"
    variant = "这家面馆开在老城区的一条小巷子里，已经经营了二十多年。"
    text = line + "老板每天凌晨四点起床熬汤。" + variant + "好的。好的。"
    out, removed = remove_similar_segments(text, CleaningConfig())
    assert removed == 2  # the variant and the second short, identical "好的。"
    assert out == line + "老板每天凌晨四点起床熬汤。" + "好的。"


def test_config_is_checked():
    with pytest.raises(ValueError, match="minhash_bands"):
        CleaningConfig(minhash_bands=20, minhash_rows=13)
    with pytest.raises(ValueError, match="max_digit_ratio"):
        CleaningConfig(max_digit_ratio=1.5)
    with pytest.raises(TypeError, match="not a string"):
        TextCleaner().clean([GOOD, 3])


def test_cli_cleans_and_reports(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    rows = [{"text": GOOD, "id": "a"}, {"text": GOOD}, {"text": ENGLISH}, {"text": GOOD_2}]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    # a BOM, a blank line (skipped) and CRLF endings
    src.write_text("\ufeff" + lines[0] + "\r\n\r\n" + "\r\n".join(lines[1:]) + "\r\n", "utf-8")
    out = tmp_path / "out.jsonl"
    assert clean_main([str(src), "--out", str(out), "--no-progress"]) == 0
    kept = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert [k["source_line"] for k in kept] == [1, 5]
    assert kept[0]["id"] == "a" and kept[0]["text"] == GOOD  # other fields carried
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["dropped"]["exact_duplicate"] == 1
    assert report["dropped"]["char_entropy"] == 1
    assert report["config"]["minhash_bands"] == 9
    assert report["blank_lines_skipped"] == 1 and report["docs"] == 4
    assert "4 documents read, 2 kept" in capsys.readouterr().out
    # English accepted by overrides
    assert (
        clean_main(
            [
                str(src),
                "-o",
                str(out),
                "--no-progress",
                "--set",
                "languages=zh,en",
                "--set",
                "min_char_entropy=2.5",
            ]
        )
        == 0
    )
    assert len(out.read_text("utf-8").splitlines()) == 3


def test_cli_bad_input_names_the_line_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"text": GOOD}, ensure_ascii=False) + "\n{not json\n", "utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not JSON"):
        clean_main([str(src), "-o", str(out), "--no-progress"])
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    src.write_text('{"body": "x"}\n', "utf-8")
    with pytest.raises(DataFormatError, match=r":1: field 'text' is missing"):
        list(read_documents(src))
    src.write_bytes(b"\xff\xfe bad\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:1: not UTF-8"):
        list(read_documents(src))
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_documents(tmp_path / "missing.txt"))


def test_cli_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(GOOD + "\n", "utf-8")
    for argv, msg in [
        (["-o", str(src)], "--out .* is the same file as INPUT"),
        (["-o", str(tmp_path / "o.jsonl"), "--report", str(src)], "--report .* as INPUT"),
        (["-o", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "o.jsonl")], "as --out"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            clean_main([str(src), "--no-progress", *argv])
    assert src.read_text("utf-8") == GOOD + "\n"
    with pytest.raises(ValueError, match=r"unknown code\(s\) \['xx'\]"):
        clean_main([str(src), "-o", str(tmp_path / "o.jsonl"), "--set", "languages=xx"])
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_bad_paths_and_rows(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "' + GOOD + '"}\n', "utf-8")
    out = tmp_path / "o.jsonl"
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        clean_main([str(tmp_path / "adir"), "-o", str(out)])
    for argv, msg in [
        (["-o", ""], "needs a file name"),
        (["-o", str(out), "--report", str(tmp_path / "adir")], "needs a file name"),
        (["-o", "/dev/null"], "not a regular file"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            clean_main([str(src), "--no-progress", *argv])
    assert not out.exists()  # nothing written before the report path was checked
    src.write_text('{"text": "' + GOOD + '\\ud800"}\n', "utf-8")
    with pytest.raises(DataFormatError, match=r"in\.jsonl:1: a string holds a lone"):
        clean_main([str(src), "-o", str(out), "--no-progress"])


def test_cli_overrides_are_checked():
    with pytest.raises(ConfigError, match="exceeds max_mean_word_length"):
        parse_overrides(["min_mean_word_length=20"])
    with pytest.raises(ConfigError, match="seed must be in"):
        parse_overrides(["seed=-1"])
    assert parse_overrides(["max_top_ngram_share=0.3,0.2,0.1"]).max_top_ngram_share == (
        0.3,
        0.2,
        0.1,
    )
    assert parse_overrides(["max_top_ngram_share=(0.3, 0.2, 0.1)"]).max_top_ngram_share[0] == 0.3
    with pytest.raises(ConfigError, match="needs 3 values"):
        parse_overrides(["max_top_ngram_share=0.3"])
    with pytest.raises(ConfigError, match="at least one language"):
        parse_overrides(["languages="])
    with pytest.raises(ConfigError, match="min_char_entropy must be a finite"):
        parse_overrides(["min_char_entropy=nan"])
    assert parse_overrides(["min_chars=20", "languages=zh,en"]).languages == ("zh", "en")
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_overrides(["bogus=1"])
    with pytest.raises(ConfigError, match="expected int"):
        parse_overrides(["min_chars=abc"])
    with pytest.raises(ConfigError, match="must be in"):
        parse_overrides(["max_digit_ratio=2"])


# real KuaiRec caption shapes (kuairec-caption-category): one line, hashtags, often no punctuation
CAPTION = "被小可爱发现了 这是什么狗狗，这么可爱真的可以这么遛吗？#喜欢的双击加关注 #萌宠驾到"
CAPTION_NO_PUNCT = "精神小伙路难走 程哥你狗粮慢点撒"
MENTION_SPAM = "看镜头宝宝@依琳老婆.(O238346445) @高雷雷：(O68058812)"


def test_the_captions_preset_keeps_captions_the_document_thresholds_drop(cleaner):
    assert cleaner.failed_rule(CAPTION) == "length"  # released thresholds: 50+ characters
    assert cleaner.failed_rule(CAPTION_NO_PUNCT) == "sentences"
    captions = TextCleaner(CAPTIONS)
    assert captions.failed_rule(CAPTION) is None
    assert captions.failed_rule(CAPTION_NO_PUNCT) is None
    assert captions.failed_rule(MENTION_SPAM) == "digit_ratio"  # spam rules still apply
    assert captions.failed_rule("哈哈哈哈哈哈哈哈哈哈哈哈") is not None
    kept, report = captions.clean([CAPTION, CAPTION, CAPTION_NO_PUNCT])
    assert [i for i, _ in kept] == [0, 2] and report.dropped["exact_duplicate"] == 1
    assert CleaningConfig(require_punctuation=False).require_punctuation is False


def test_cli_preset_captions(tmp_path):
    src = tmp_path / "captions.txt"
    src.write_text(f"{CAPTION}\n{CAPTION_NO_PUNCT}\n{MENTION_SPAM}\n", "utf-8")
    out = tmp_path / "out.jsonl"
    assert clean_main([str(src), "-o", str(out), "--no-progress"]) == 0
    assert out.read_text("utf-8") == ""
    assert clean_main([str(src), "-o", str(out), "--no-progress", "--preset", "captions"]) == 0
    assert [json.loads(x)["source_line"] for x in out.read_text("utf-8").splitlines()] == [1, 2]
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["config"]["min_chars"] == 5 and report["dropped"]["digit_ratio"] == 1
