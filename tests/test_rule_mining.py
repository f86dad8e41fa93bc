from router._intents import Labelled
from router._rule_mining import mine_keyword_rules


def test_mines_precise_ngrams_and_drops_leaky_ones() -> None:
    train = Labelled(
        ["what is the weather today"] * 10 + ["book a flight today"] * 10 + ["weather is nice"] * 2,
        ["weather"] * 10 + ["flight"] * 10 + ["oos"] * 2,
    )
    val = Labelled(
        ["weather today please", "the weather today", "weather today?", "book a flight", "book a flight now",
         "book a flight to rome", "today is sunday"],
        ["weather", "weather", "weather", "flight", "flight", "flight", "oos"],
    )
    rules = mine_keyword_rules(train, val, min_train_support=5, min_val_support=3)
    keywords = {(r.intent, r.keyword) for r in rules}
    # "weather" also occurs in out-of-scope training text; "today" in two intents: neither may be a rule.
    assert not any(k == "weather" or k == "today" for _, k in keywords)
    assert ("flight", "flight") in keywords
    assert all(r.val_precision >= 0.995 and r.val_support >= 3 for r in rules)


def test_precision_bar_rejects_rules_wrong_on_validation() -> None:
    train = Labelled(["refund my order"] * 10, ["refund"] * 10)
    val = Labelled(["refund my order", "refund please", "order a refund", "my order is late"],
                   ["refund", "refund", "refund", "oos"])
    rules = mine_keyword_rules(train, val, min_train_support=5, min_val_support=3)
    assert {r.keyword for r in rules} == {"refund"}  # "order" and "my" hit the oos query
