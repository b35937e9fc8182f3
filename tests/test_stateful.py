"""Random sequences of API calls by several owners, checked after every step against a model.

The model is plain Python: configs as created, events as first stored (by owner and
event id), and the oracle for usage reports. Any lost, doubled or leaked event, any
half-stored bad batch, shows up as a difference. Each sequence starts empty as owners of
its own, on one database per engine: what other owners store is invisible to it.
"""
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from conftest import assert_error, bearer
from oracle import event_cost_micros, expected_body
from support import catalogue_names, catalogue_prices
from usage_server import create_app
from usage_server.auth import create_key
from usage_server.storage import connect, write_transaction

OWNERS = ("acme", "globex", "initech")
CONFIG_IDS = ("cfg_a", "cfg_b", "cfg_c", "cfg.d")
MODELS = (("gpt-4o", "OpenAI"), ("gpt-4o-mini", "OpenAI"), ("house-model", "Acme"))
EVENT_IDS = tuple(f"ev{i}" for i in range(24)) + ("run:1", "run:2.a")
WINDOW_START = datetime(2026, 3, 1, tzinfo=timezone.utc)
WINDOW_SECONDS = 10 * 86_400
QUERY_DAYS = (date(2026, 2, 27), date(2026, 3, 13))
ZONES = ("UTC", "America/Los_Angeles", "Asia/Kathmandu", "Asia/Kolkata")
# days of Los Angeles and Kolkata from local-day rollups, Kolkata's hours from local hours,
# Kathmandu's from quarter hours
FAST_TIMEZONES = "America/Los_Angeles,Asia/Kolkata"
OFFSETS = (None, "Z", "+05:45", "+05:30", "-08:00", "+01:00")
PRICES, NAMES = catalogue_prices(), catalogue_names()
STATS = {"sequences": 0, "steps": 0}

owners = st.sampled_from(OWNERS)


@st.composite
def event_payloads(draw, config_ids):
    """An event as a client sends it: optional fields present or not, any UTC offset."""
    instant = WINDOW_START + timedelta(seconds=draw(st.integers(0, WINDOW_SECONDS - 1)),
                                       microseconds=draw(st.sampled_from([0, 0, 0, 1000, 500_000, 123_456])))
    offset = draw(st.sampled_from(OFFSETS))
    if offset is None:
        text = instant.replace(tzinfo=None).isoformat()
    else:
        hours, minutes = (0, 0) if offset == "Z" else (int(offset[:3]), int(offset[0] + offset[4:]))
        text = instant.astimezone(timezone(timedelta(hours=hours, minutes=minutes))).isoformat()
        text = text.replace("+00:00", "Z") if offset == "Z" else text
    event = {"id": draw(st.sampled_from(EVENT_IDS)), "timestamp": text,
             "modelConfigId": draw(st.sampled_from(config_ids)),
             "promptTokens": draw(st.integers(0, 20_000)), "completionTokens": draw(st.integers(0, 5_000))}
    if draw(st.booleans()):
        event["totalTokens"] = draw(st.integers(0, 30_000))
    cost = draw(st.one_of(st.none(), st.integers(0, 3), st.integers(0, 9_000_000).map(lambda micros: micros / 10**6)))
    if cost is not None:
        event["cost"] = cost
    if draw(st.booleans()):
        event["executionTime"] = draw(st.integers(0, 120_000)) / 1000
    source = draw(st.sampled_from([None, "platform", "user"]))
    if source is not None:
        event["billingSource"] = source
    if draw(st.booleans()):
        event["cachedPromptTokens"] = draw(st.integers(0, event["promptTokens"]))
    if draw(st.booleans()):
        event["cacheWriteTokens"] = draw(st.integers(0, event["promptTokens"] - event.get("cachedPromptTokens", 0)))
    if draw(st.booleans()):
        event["reasoningTokens"] = draw(st.integers(0, event["completionTokens"]))
    return event


def batches(config_ids):
    return st.lists(event_payloads(config_ids), min_size=1, max_size=12)


BAD_VALUES = (  # (field, value that makes the event invalid)
    ("promptTokens", -1), ("completionTokens", "12"), ("totalTokens", 1.5), ("timestamp", "yesterday"),
    ("timestamp", 1772323200), ("cost", True), ("cost", -0.5), ("executionTime", "1s"), ("billingSource", "both"),
    ("modelConfigId", "cfg_missing"), ("modelConfigId", "bad/id"), ("id", ""), ("id", "x" * 129), ("colour", "red"),
    ("cachedPromptTokens", 20_001), ("cacheWriteTokens", "3"), ("reasoningTokens", 5_001), ("reasoningTokens", None),
)


def ts_us(text: str) -> int:
    instant = datetime.fromisoformat(text)
    instant = instant.replace(tzinfo=timezone.utc) if instant.tzinfo is None else instant
    return (instant - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def micros(amount) -> int:
    return int((Decimal(str(amount)) * 10**6).to_integral_value(ROUND_HALF_EVEN))


def payload(event: dict) -> tuple:
    """What makes a re-sent event the same event: its normalised content."""
    total = event.get("totalTokens", event["promptTokens"] + event["completionTokens"])
    execution = event.get("executionTime")
    return (ts_us(event["timestamp"]), event["modelConfigId"], event["promptTokens"], event["completionTokens"], total,
            None if event.get("cost") is None else micros(event["cost"]),
            None if execution is None else micros(execution), event.get("billingSource", "platform"),
            event.get("cachedPromptTokens", 0), event.get("cacheWriteTokens", 0), event.get("reasoningTokens", 0))


def instant_text(us: int) -> str:
    seconds, fraction = divmod(us, 10**6)
    text = (datetime(1970, 1, 1) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction % 1000:
        return f"{text}.{fraction:06d}Z"
    return f"{text}.{fraction // 1000:03d}Z" if fraction else f"{text}Z"


def usd(amount_micros: int) -> float:
    return float(Decimal(amount_micros) / 10**6)


class Owner:
    """The model of one owner: configs in creation order, events in storage order."""

    def __init__(self, key):
        self.key = key
        self.configs: dict[str, dict] = {}
        self.events: dict[str, dict] = {}
        self.sent: list[list[dict]] = []

    def ingest(self, events: list[dict]) -> dict:
        result = {"accepted": 0, "duplicates": 0, "conflicts": 0}
        for event in events:
            stored = self.events.get(event["id"])
            if stored is None:
                self.events[event["id"]] = event
                result["accepted"] += 1
            else:
                result["duplicates"] += 1
                result["conflicts"] += payload(stored) != payload(event)
        return result

    def config_models(self) -> dict:
        return {cid: {"modelId": c["modelId"], "provider": c["provider"], "modelName": c["modelName"]}
                for cid, c in self.configs.items()}

    def recent(self, config_id: str, limit: int) -> list[dict]:
        order = list(self.events.values())
        mine = [(ts_us(event["timestamp"]), position, event) for position, event in enumerate(order)
                if event["modelConfigId"] == config_id]
        model_id = self.configs[config_id]["modelId"]
        items = []
        for when, _, event in sorted(mine, key=lambda item: item[:2], reverse=True)[:limit]:
            cost, priced = event_cost_micros({**event, "_model_id": model_id}, PRICES)
            execution = event.get("executionTime")
            items.append({
                "id": event["id"], "timestamp": instant_text(when), "completionTokens": event["completionTokens"],
                "estimatedCost": usd(cost), "executionTime": None if execution is None else usd(micros(execution)),
                "promptTokens": event["promptTokens"],
                "totalTokens": event.get("totalTokens", event["promptTokens"] + event["completionTokens"]),
                "billingSource": event.get("billingSource", "platform"), "priced": priced,
                "priceSource": "sent" if event.get("cost") is not None else "catalogue" if priced else "none",
                "cachedPromptTokens": event.get("cachedPromptTokens", 0),
                "cacheWriteTokens": event.get("cacheWriteTokens", 0),
                "reasoningTokens": event.get("reasoningTokens", 0),
            })
        return items


class UsageMachine(RuleBasedStateMachine):
    def __init__(self, app, engine: str):
        """One sequence on `app`'s database (of `engine`), as new owners."""
        super().__init__()
        STATS["sequences"] += 1
        conn = connect(app.config)
        with write_transaction(conn):
            keys = {name: create_key(conn, f"{name}#{STATS['sequences']}", ["read", "write"])[1] for name in OWNERS}
        conn.close()
        self.client = app.test_client()
        self.data_source = f"usage-server-{engine}"
        self.owners = {name: Owner(key) for name, key in keys.items()}

    def teardown(self):
        self.client = None

    def get(self, owner, path, **params):
        return self.client.get(path, query_string=params, headers=bearer(self.owners[owner].key))

    def post(self, owner, path, body):
        return self.client.post(path, json=body, headers=bearer(self.owners[owner].key))

    @initialize(owner=owners, config_id=st.sampled_from(CONFIG_IDS), model=st.sampled_from(MODELS))
    def first_config(self, owner, config_id, model):
        self.create_config(owner, config_id, model, None)

    @rule(owner=owners, config_id=st.sampled_from(CONFIG_IDS), model=st.sampled_from(MODELS),
          display_name=st.one_of(st.none(), st.text("abc XYZ-", min_size=1, max_size=12)))
    def create_config(self, owner, config_id, model, display_name):
        body = {"id": config_id, "modelId": model[0], "provider": model[1]}
        if display_name is not None:
            body["displayName"] = display_name
        response = self.post(owner, "/v1/model-configs", body)
        configs = self.owners[owner].configs
        if config_id in configs:
            assert_error(response, 409, "conflict", "id")
            return
        assert response.status_code == 201, response.get_json()
        created = response.get_json()
        model_name = NAMES.get(model[0], model[0])
        assert created == {"id": config_id, "displayName": display_name or model_name, "modelId": model[0],
                           "provider": model[1], "modelName": model_name, "isDefault": False, "isEnabled": True,
                           "settings": {}, "createdAt": created["createdAt"], "updatedAt": created["createdAt"]}
        assert instant_text(ts_us(created["createdAt"])) == created["createdAt"]
        configs[config_id] = created

    def owners_with_configs(self):
        return [name for name, owner in self.owners.items() if owner.configs]

    @rule(data=st.data())
    def ingest(self, data):
        owner = data.draw(st.sampled_from(self.owners_with_configs()))
        events = data.draw(batches(sorted(self.owners[owner].configs)))
        self.send(owner, events)

    def send(self, owner, events):
        response = self.post(owner, "/v1/model-usage/events", {"events": events})
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == self.owners[owner].ingest(events)
        self.owners[owner].sent.append(events)

    @precondition(lambda self: any(owner.sent for owner in self.owners.values()))
    @rule(data=st.data())
    def resend(self, data):
        owner = data.draw(st.sampled_from([name for name, o in self.owners.items() if o.sent]))
        self.send(owner, data.draw(st.sampled_from(self.owners[owner].sent)))

    @rule(data=st.data(), bad=st.sampled_from(BAD_VALUES))
    def bad_batch(self, data, bad):
        owner = data.draw(st.sampled_from(self.owners_with_configs()))
        events = data.draw(batches(sorted(self.owners[owner].configs)))
        index = data.draw(st.integers(0, len(events) - 1))
        field, value = bad
        events[index] = {**events[index], field: value}
        response = self.post(owner, "/v1/model-usage/events", {"events": events})
        assert_error(response, 400, "invalid_request", f"events.{index}.{field}")

    @rule(owner=owners, days=st.lists(st.integers(0, (QUERY_DAYS[1] - QUERY_DAYS[0]).days), min_size=2, max_size=2),
          granularity=st.sampled_from(["hour", "day", "week", "month"]), zone=st.sampled_from(ZONES), data=st.data())
    def query_usage(self, owner, days, granularity, zone, data):
        start, end = (QUERY_DAYS[0] + timedelta(days=day) for day in sorted(days))
        model = self.owners[owner]
        config_id = data.draw(st.sampled_from([None, *sorted(model.configs), "cfg_nobody"]))
        params = {"startDate": start.isoformat(), "endDate": end.isoformat(), "granularity": granularity, "timezone": zone}
        if config_id is not None:
            params["modelConfigId"] = config_id
        response = self.get(owner, "/v1/model-usage", **params)
        if config_id is not None and config_id not in model.configs:
            assert_error(response, 404, "not_found")
            return
        assert response.status_code == 200, response.get_json()
        expected = expected_body(list(model.events.values()), model.config_models(), PRICES, start, end,
                                 granularity, zone, config_id, data_source=self.data_source)
        assert response.get_json() == expected
        assert list(response.get_json()["usageByModel"]) == list(expected["usageByModel"])

    @rule(owner=owners, limit=st.integers(1, 40), data=st.data())
    def query_details(self, owner, limit, data):
        model = self.owners[owner]
        config_id = data.draw(st.sampled_from([*sorted(model.configs), "cfg_nobody"]))
        response = self.get(owner, f"/v1/model-usage/{config_id}", limit=limit)
        if config_id not in model.configs:
            assert_error(response, 404, "not_found")
            return
        assert response.status_code == 200, response.get_json()
        config = model.configs[config_id]
        assert response.get_json() == {
            "meta": {"dataSource": self.data_source},
            "modelConfig": {key: config[key] for key in ("displayName", "id", "modelId", "provider")},
            "recentUsage": model.recent(config_id, limit),
        }

    @rule(owner=owners)
    def list_configs(self, owner):
        configs = sorted(self.owners[owner].configs.values(), key=lambda c: (c["createdAt"], c["id"]))
        assert self.get(owner, "/v1/model-configs").get_json() == {"data": configs, "total": len(configs)}

    @invariant()
    def usage_counts_match(self):
        """After every step, for every owner: requests and last use per config."""
        STATS["steps"] += 1
        for name, model in self.owners.items():
            data = []
            for config in sorted(model.configs.values(), key=lambda c: (c["createdAt"], c["id"])):
                used = [ts_us(e["timestamp"]) for e in model.events.values() if e["modelConfigId"] == config["id"]]
                data.append({"id": config["id"], "provider": config["provider"], "modelId": config["modelId"],
                             "usageCount": len(used), "lastUsedAt": instant_text(max(used)) if used else None})
            assert self.get(name, "/v1/model-configs/usage").get_json() == {"data": data, "total": len(data)}


SETTINGS = settings(
    max_examples=30, stateful_step_count=25, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_random_sequences_of_calls_agree_with_the_model(engine, new_database, capsys):
    STATS.update(sequences=0, steps=0)
    app = create_app({"TESTING": True, "DATABASE": new_database(engine), "BUSY_TIMEOUT_MS": 200,
                      "FAST_TIMEZONES": FAST_TIMEZONES})
    run_state_machine_as_test(lambda: UsageMachine(app, engine), settings=SETTINGS)
    with capsys.disabled():
        print(f"\nstateful ({engine}): {STATS['sequences']} sequences, {STATS['steps']} steps checked")
