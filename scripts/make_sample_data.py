"""Generate sample_data/: small, realistic datasets that show fine-tuning doing something.

    .venv/bin/python scripts/make_sample_data.py            # rewrites sample_data/
    .venv/bin/python scripts/make_sample_data.py --out DIR  # writes elsewhere (the tests do)

Deterministic: the same script writes the same bytes (a test checks the committed files).
Every dataset is OpenAI chat JSONL (one ``{"messages": [...]}`` per line) except the preference
pairs (OpenAI DPO JSONL) and the broken file (deliberately wrong). See sample_data/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20260501
QUEUES = ("payments-ops", "platform-eng", "identity-team", "logistics")
TICKET_SYSTEM = (
    "You route customer support tickets to a queue. Answer with exactly one queue name and "
    "nothing else: payments-ops, platform-eng, identity-team or logistics."
)

# --- support tickets ------------------------------------------------------------------------------

_SLOTS = {
    "amount": ["$19.99", "$49", "€120", "$7.50", "£35", "$240", "$1,200", "€9.99", "$89.00", "$15"],
    "card": ["Visa", "Mastercard", "Amex", "debit card", "company card", "PayPal account"],
    "plan": ["Pro plan", "Team plan", "annual subscription", "Starter plan", "Enterprise seat bundle"],
    "invoice": ["INV-20931", "INV-44120", "INV-10077", "INV-38815", "INV-52004", "INV-71230"],
    "service": ["the API", "the dashboard", "the webhooks endpoint", "the export job", "the mobile app",
                "the search page", "the sync service", "the reporting module"],
    "error": ["HTTP 500", "a 502 Bad Gateway", "a timeout after 30 seconds", "a blank white page",
              "error code E_CONN_RESET", "a 503 Service Unavailable", "an endless spinner"],
    "region": ["eu-west", "us-east", "ap-south", "our Frankfurt region", "the Sydney cluster"],
    "device": ["my new phone", "my work laptop", "a shared tablet", "my iPhone", "an Android phone"],
    "order": ["#58213", "#60017", "#44902", "#71385", "#39920", "#80441", "#66218"],
    "carrier": ["DHL", "UPS", "FedEx", "the local courier", "Royal Mail", "DPD"],
    "item": ["the standing desk", "two monitor arms", "the ergonomic chair", "a pack of labels",
             "the barcode scanner", "the replacement battery", "the docking station"],
    "city": ["Lyon", "Denver", "Leeds", "Osaka", "Porto", "Austin", "Ghent", "Tallinn"],
    "days": ["three days", "a week", "ten days", "two weeks", "since Monday", "48 hours"],
    "when": ["this morning", "yesterday", "since the last release", "for about an hour", "overnight",
             "since 9am", "after your maintenance window"],
}

_TEMPLATES = {
    "payments-ops": [
        "I was charged {amount} twice for the {plan} this month. Please refund the duplicate.",
        "My {card} was declined when renewing the {plan}, but the bank says nothing is wrong.",
        "Invoice {invoice} shows {amount} but our contract says less. Can someone correct it?",
        "We cancelled the {plan} {days} ago and still got billed {amount}.",
        "Can you send a refund for {amount}? The upgrade to the {plan} never went through.",
        "Our finance team needs a VAT-compliant copy of invoice {invoice}.",
        "The checkout page takes my {card} details and then says payment failed. Tried {when}.",
        "Why did my bill jump to {amount}? Nobody added seats to the {plan}.",
        "Please switch our billing from {card} to bank transfer starting next cycle.",
        "I see a pending authorization of {amount} on my {card} that never cleared.",
        "The proration on invoice {invoice} looks wrong after we downgraded the {plan}.",
        "hi, got charged {amount} for something called 'usage overage', what is that??",
        "Refund still not on my {card} {days} after you confirmed it.",
        "We need to update the billing address on invoice {invoice} for our auditors.",
        "Payment for the {plan} failed and now the account says past due. Card is valid.",
        "Could you apply the discount code we were promised? The {plan} renewed at full {amount}.",
    ],
    "platform-eng": [
        "{service} has been returning {error} {when}.",
        "Our integration with {service} started failing with {error} in {region}.",
        "Latency on {service} went from 80 ms to several seconds {when}.",
        "The status page says all green but {service} gives us {error}.",
        "Deploys are stuck and {service} shows {error} for every request from {region}.",
        "We're hitting rate limits on {service} far below our quota, seeing {error}.",
        "Data in {service} is hours behind; the sync looks broken {when}.",
        "URGENT: production outage, {service} is down for us with {error}.",
        "Since the update, {service} crashes on startup with {error}.",
        "Webhooks stopped arriving {when}; our endpoint is healthy and {service} logs show {error}.",
        "Large CSV exports from {service} never finish, they end with {error}.",
        "is {service} down? getting {error} from {region}",
        "The SDK retries forever when {service} answers with {error}.",
        "Uploads above 100 MB to {service} fail halfway with {error}.",
        "Our dashboards show missing metrics from {region} {when}; {service} reports {error}.",
        "TLS handshake to {service} fails from {region} {when}.",
    ],
    "identity-team": [
        "I can't log in: the two-factor code never arrives on {device}.",
        "I lost {device} and with it my authenticator app. How do I get back in?",
        "Password reset emails aren't arriving, tried three times {when}.",
        "Our SSO login through Okta fails with 'invalid SAML response' {when}.",
        "Please remove a former employee's access to our workspace immediately.",
        "My account got locked after too many attempts and the unlock link expired.",
        "I need to change the email address on my account; the old one no longer exists.",
        "Someone logged into my account from {city}, I did not do that. Please secure it.",
        "How do I give a colleague admin rights without sharing my password?",
        "The 'Sign in with Google' button loops back to the login page on {device}.",
        "Our SCIM provisioning stopped creating new users {when}.",
        "cant login, says my session expired every 2 minutes",
        "I'd like to enable passkeys for our whole team. Where is that setting?",
        "API keys for our service account were rotated and now nobody can authenticate.",
        "Invited users get 'link invalid' when accepting the invitation {when}.",
        "Please reset MFA for my account, I got a new {device}.",
    ],
    "logistics": [
        "Order {order} was supposed to arrive {days} ago and tracking hasn't moved.",
        "{carrier} marked order {order} as delivered but nothing came to our office in {city}.",
        "We received {item} damaged, the box was crushed. Order {order}.",
        "Can I change the delivery address for order {order} to our {city} office?",
        "The package from order {order} is stuck in customs in {city}.",
        "Order {order} arrived without {item}; the packing slip lists it.",
        "I'd like to return {item} from order {order}, how do I get a shipping label?",
        "{carrier} says the address on order {order} is incomplete. Please fix it.",
        "When will {item} be back in stock? Our order {order} is on hold.",
        "We got two of {item} but ordered one (order {order}). How do we send one back?",
        "Please split order {order} so {item} ships now and the rest later.",
        "tracking for {order} says 'exception' for {days}, what does that mean",
        "Our warehouse in {city} needs a delivery appointment before {carrier} shows up.",
        "The replacement for {item} was never shipped, it's been {days}.",
        "Order {order} went to {city} instead of our main office.",
        "Can {carrier} pick up the return of {item} from our {city} site?",
    ],
}

_OPENERS = ["", "", "", "Hello, ", "Hi team, ", "Good morning. ", "Hey, ", "Dear support, "]
_CLOSERS = ["", "", "", " Thanks.", " Thank you!", " Regards, Dana", " Please help.", " Cheers"]


def _fill(template: str, rng: random.Random) -> str:
    values = {k: rng.choice(v) for k, v in _SLOTS.items() if "{" + k + "}" in template}
    text = template.format(**values)
    return (rng.choice(_OPENERS) + text + rng.choice(_CLOSERS)).strip()


def _ticket_example(text: str, queue: str) -> dict:
    return {"messages": [
        {"role": "system", "content": TICKET_SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": queue},
    ]}


def tickets(rng: random.Random, per_queue: int) -> dict[str, list[tuple[str, str]]]:
    """``per_queue`` distinct tickets per queue; no text appears twice anywhere."""
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for queue in QUEUES:
        rows: list[tuple[str, str]] = []
        templates = _TEMPLATES[queue]
        i = 0
        while len(rows) < per_queue:
            text = _fill(templates[i % len(templates)], rng)
            i += 1
            if text not in seen:
                seen.add(text)
                rows.append((text, queue))
        out[queue] = rows
    return out


def split_tickets(by_queue: dict[str, list[tuple[str, str]]], rng: random.Random) -> dict[str, list[dict]]:
    sizes = {"fewshot": 6, "test": 20, "val": 15}  # per queue; the rest is train
    parts: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": [], "fewshot": []}
    for queue in QUEUES:
        rows = list(by_queue[queue])
        rng.shuffle(rows)
        start = 0
        for part, n in sizes.items():
            parts[part] += rows[start:start + n]
            start += n
        parts["train"] += rows[start:]
    result = {}
    for part, rows in parts.items():
        rng.shuffle(rows)
        result[part] = [_ticket_example(t, q) for t, q in rows]
    return result


# --- field extraction ------------------------------------------------------------------------------

EXTRACTION_KEYS = ("customer_name", "order_id", "product", "quantity", "delivery_city")
EXTRACTION_SYSTEM = (
    "Extract the order details from the message. Answer with one JSON object with exactly these "
    "keys: customer_name, order_id, product, quantity, delivery_city. Use null for a missing value."
)
_FIRST = ["Maria", "Jonas", "Aiko", "Tom", "Priya", "Lucas", "Fatima", "Sven", "Chen", "Olivia",
          "Mateo", "Hannah", "Kofi", "Elena", "Ravi", "Ingrid"]
_LAST = ["Keller", "Novak", "Tanaka", "Brennan", "Sharma", "Moreau", "Haddad", "Lindqvist", "Wei",
         "Carter", "Rossi", "Fischer", "Mensah", "Petrova", "Iyer", "Dahl"]
_PRODUCTS = ["standing desk", "monitor arm", "office chair", "label printer", "USB-C dock",
             "desk lamp", "whiteboard", "cable tray", "footrest", "laptop stand"]
_EXTRACT_TEMPLATES = [
    "Hi, this is {name}. Please send {qty} x {product} for order {oid} to our {city} office.",
    "Order {oid}: {qty} {product}(s), deliver to {city}. Contact: {name}.",
    "{name} here - could you ship {qty} units of the {product} to {city}? Reference {oid}.",
    "Following up on {oid}. We need {qty} {product} delivered in {city}. Best, {name}",
    "Please process {oid} ({qty} x {product}). Ship to {city}. Thanks, {name}",
    "New request from {name}: {product}, quantity {qty}, destination {city}, order number {oid}.",
    "Can you confirm order {oid}? It's {qty} {product} for {city}.",
    "{name} would like {qty} {product} sent to {city}.",
]


def extraction(rng: random.Random, n: int) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < n:
        template = rng.choice(_EXTRACT_TEMPLATES)
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        oid = f"ORD-{rng.randint(10000, 99999)}"
        qty = rng.randint(1, 12)
        product = rng.choice(_PRODUCTS)
        city = rng.choice(_SLOTS["city"])
        text = template.format(name=name, oid=oid, qty=qty, product=product, city=city)
        if text in seen:
            continue
        seen.add(text)
        answer = {
            "customer_name": name if "{name}" in template else None,
            "order_id": oid if "{oid}" in template else None,
            "product": product,
            "quantity": qty,
            "delivery_city": city,
        }
        rows.append({"messages": [
            {"role": "system", "content": EXTRACTION_SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]})
    return rows


# --- domain Q&A (a fictional thermostat) and a general set ---------------------------------------

DOMAIN_SYSTEM = "You are the support assistant for the Lumen 3 smart thermostat. Answer briefly and exactly."
_DOMAIN_FACTS = [
    (["How do I factory reset the Lumen 3?", "What's the way to reset my Lumen 3 to factory settings?",
      "Lumen 3 factory reset steps?", "I want to wipe my Lumen 3 completely. How?"],
     "Hold the dial pressed for 12 seconds until the ring blinks red, then release."),
    (["What batteries does the Lumen 3 use?", "Which battery type goes in the Lumen 3?",
      "Does the Lumen 3 take AA or AAA batteries?", "Lumen 3 battery type?"],
     "Two AAA lithium batteries; they last about 18 months."),
    (["How do I pair the Lumen 3 with the app?", "Connecting Lumen 3 to the phone app - how?",
      "What are the pairing steps for the Lumen 3?", "My app can't find the Lumen 3, how do I pair it?"],
     "Open the Lumen app, tap Add device, then press the dial twice quickly."),
    (["What does a blinking amber ring mean on the Lumen 3?", "Lumen 3 ring is flashing amber, why?",
      "Why is my Lumen 3 blinking orange?", "Amber blinking light on Lumen 3?"],
     "The Lumen 3 lost its Wi-Fi connection; it retries every 5 minutes."),
    (["What Wi-Fi bands does the Lumen 3 support?", "Does the Lumen 3 work on 5 GHz Wi-Fi?",
      "Can the Lumen 3 connect to a 5GHz network?", "Lumen 3 Wi-Fi frequency support?"],
     "Only 2.4 GHz Wi-Fi; 5 GHz networks are not supported."),
    (["What is the Lumen 3 temperature range?", "How low and how high can the Lumen 3 be set?",
      "Lumen 3 min and max temperature?", "What temperatures can I set on the Lumen 3?"],
     "From 5 °C to 32 °C, in steps of 0.5 °C."),
    (["How long is the Lumen 3 warranty?", "What's the warranty period for the Lumen 3?",
      "Is the Lumen 3 under warranty for two years?", "Lumen 3 warranty length?"],
     "Three years from the date of purchase."),
    (["What does Eco mode do on the Lumen 3?", "Explain Lumen 3 Eco mode.",
      "Lumen 3 Eco mode - what is it?", "What happens when I turn on Eco mode on my Lumen 3?"],
     "Eco mode lowers the setpoint by 2 °C while nobody is home."),
    (["Does the Lumen 3 need a C-wire?", "Can I install the Lumen 3 without a common wire?",
      "Is a C wire required for Lumen 3?", "Lumen 3 without C-wire possible?"],
     "No; the Lumen 3 runs on batteries, a C-wire is optional."),
    (["How do I update the Lumen 3 firmware?", "Lumen 3 firmware update - how?",
      "How can I get the latest firmware on my Lumen 3?", "Where do I update the Lumen 3 software?"],
     "Updates install automatically at 3 am; force one in the app under Device > Firmware."),
    (["How do I lock the Lumen 3 controls?", "Child lock on the Lumen 3?",
      "Can I stop kids from changing the Lumen 3 temperature?", "How to enable the Lumen 3 child lock?"],
     "Turn the dial left three full turns; a padlock icon appears."),
    (["What is the Lumen 3 support phone number?", "How do I call Lumen support?",
      "Lumen 3 hotline number?", "Which number do I call for Lumen 3 help?"],
     "Call 0800 555 0133, weekdays 8:00 to 18:00."),
]


def domain_qa(rng: random.Random) -> dict[str, list[dict]]:
    # Per fact: two phrasings train, one val, one test (the test asks in a new way).
    parts: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for questions, answer in _DOMAIN_FACTS:
        qs = list(questions)
        rng.shuffle(qs)
        for part, q in zip(("train", "train", "val", "test"), qs):
            parts[part].append({"messages": [
                {"role": "system", "content": DOMAIN_SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": answer},
            ]})
    for rows in parts.values():
        rng.shuffle(rows)
    return parts


_CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
             ("Australia", "Canberra"), ("Brazil", "Brasília"), ("Norway", "Oslo"), ("Egypt", "Cairo"),
             ("Portugal", "Lisbon"), ("Peru", "Lima"), ("Poland", "Warsaw"), ("India", "New Delhi"),
             ("Ireland", "Dublin"), ("Chile", "Santiago"), ("Greece", "Athens"), ("Vietnam", "Hanoi")]
_ANTONYMS = [("hot", "cold"), ("early", "late"), ("happy", "sad"), ("open", "closed"), ("light", "dark"),
             ("fast", "slow"), ("full", "empty"), ("strong", "weak"), ("above", "below"), ("buy", "sell")]


def general(rng: random.Random, n: int) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < n:
        kind = rng.randrange(5)
        if kind == 0:
            country, capital = rng.choice(_CAPITALS)
            q = rng.choice(["What is the capital of {c}?", "Name the capital city of {c}.",
                            "Which city is the capital of {c}?"]).format(c=country)
            a = f"The capital of {country} is {capital}."
        elif kind == 1:
            x, y = rng.randint(2, 99), rng.randint(2, 99)
            q = rng.choice(["What is {x} + {y}?", "Add {x} and {y}.", "Compute {x} plus {y}."]).format(x=x, y=y)
            a = f"{x} + {y} = {x + y}."
        elif kind == 2:
            x, y = rng.randint(2, 19), rng.randint(2, 19)
            q = rng.choice(["What is {x} times {y}?", "Multiply {x} by {y}."]).format(x=x, y=y)
            a = f"{x} × {y} = {x * y}."
        elif kind == 3:
            word, opposite = rng.choice(_ANTONYMS)
            if rng.random() < 0.5:
                word, opposite = opposite, word
            q = rng.choice(["What is the opposite of '{w}'?", "Give an antonym of '{w}'."]).format(w=word)
            a = f"The opposite of '{word}' is '{opposite}'."
        else:
            km = rng.randint(1, 50)
            q = f"How many meters are in {km} kilometers?"
            a = f"{km} kilometers are {km * 1000} meters."
        if q in seen:
            continue
        seen.add(q)
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return rows


# --- preference pairs --------------------------------------------------------------------------------

_RAMBLES = [
    "Thanks for reaching out! This sounds like it could involve several teams. It might be {q}, "
    "but you may also want to check with billing or engineering to be sure.",
    "I'm not completely sure which team handles this. Perhaps {q}? Let me know if you need anything else!",
    "Great question. Tickets like this usually go to a specialist team, possibly {q}, depending on the details.",
]


def preferences(ticket_rows: list[dict], rng: random.Random) -> list[dict]:
    rows = []
    for ex in ticket_rows:
        msgs = ex["messages"]
        queue = msgs[2]["content"]
        wrong = rng.choice([q for q in QUEUES if q != queue])
        rejected = rng.choice(_RAMBLES).format(q=rng.choice([queue, wrong]))
        rows.append({
            "input": {"messages": [msgs[0], msgs[1]]},
            "preferred_output": [{"role": "assistant", "content": queue}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}],
        })
    return rows


# --- the broken file -------------------------------------------------------------------------------

def _line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def broken() -> bytes:
    """One or more lines per validation rule; sample_data/README.md lists which line breaks what."""
    ok = [{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": "Refund please"},
          {"role": "assistant", "content": "payments-ops"}]
    u = {"role": "user", "content": "hello"}
    a = {"role": "assistant", "content": "hi"}
    lines: list[bytes] = [
        b"\xef\xbb\xbf" + _line({"messages": ok}),                                   # 1 bom
        b"",                                                                          # 2 blank_line
        b'{"messages": [{"role": "user", "content": "hi"}',                           # 3 invalid_json
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}',  # 4 non_utf8
        _line(["not", "an", "object"]),                                               # 5 data_type
        _line({"prompt_text": "no messages here"}),                                   # 6 missing_messages_list
        _line({"messages": ["just a string", a]}),                                    # 7 message_type
        _line({"messages": [{"content": "who am i"}, a]}),                            # 8 message_missing_key
        _line({"messages": [u, {"role": "assistant", "content": "hi", "mood": "happy"}]}),  # 9 message_unrecognized_key
        _line({"messages": [{"role": "bot", "content": "hi"}, a]}),                   # 10 unrecognized_role
        _line({"messages": [u, {"role": "assistant", "content": 42}]}),               # 11 missing_content
        _line({"messages": [u, {"role": "assistant", "content": ""}]}),               # 12 empty_assistant_message
        _line({"messages": [u, {"role": "user", "content": "anyone?"}]}),             # 13 example_missing_assistant_message
        _line({"messages": [u, {"role": "assistant", "content": "hi", "weight": 2}]}),  # 14 invalid_weight
        _line({"messages": [u, {"role": "assistant", "content": "hi", "weight": 0}]}),  # 15 no_trainable_assistant
        _line({"messages": [u, a, {"role": "system", "content": "late system"}, a]}),  # 16 roles_out_of_order
        _line({"messages": [u, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
               "function": {"name": "lookup", "arguments": "{not json"}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "{}"}, a]}),         # 17 invalid_tool_call
        _line({"messages": [u, {"role": "tool", "tool_call_id": "c9", "content": "{}"}, a]}),  # 18 tool_message_unmatched
        _line({"tools": [{"type": "function"}], "messages": [u, a]}),                 # 19 invalid_tools
        _line({"messages": [u, a], "metadata": {"source": "crm"}}),                   # 20 unknown_key
        _line({"messages": [u, a, u]}),                                               # 21 last_message_not_assistant
        _line({"messages": [{"role": "system", "content": "s"}, a]}),                 # 22 missing_user_message
        _line({"messages": [{"role": "user", "content": ""}, a]}),                    # 23 empty_content
        _line({"messages": [{"role": "user", "content": "Fix <|endoftext|> in my text"}, a]}),  # 24 reserved_special_token
        _line({"messages": ok}),                                                      # 25 duplicate_example (of line 1)
        _line({"input": {"messages": [u]}, "preferred_completion": [a],
               "non_preferred_completion": [{"role": "assistant", "content": "go away"}]}),  # 26 preference_completion_spelling, mixed_formats
        _line({"input": {"messages": [u]}, "preferred_output": [],
               "non_preferred_output": [a]}),                                         # 27 invalid_preference
        _line({"input": {"messages": [u]}, "preferred_output": [a], "non_preferred_output": [a]}),  # 28 identical_preference
        _line({"messages": [u, {"role": "assistant", "content": "word " * 5000}]}),   # 29 over_token_limit (4,096-token models)
        _line({"messages": [u, {"role": "assistant", "content": "ok"}]}),             # 30 missing_system_message
        _line({"conversations": [{"from": "robot", "value": "beep"}]}),               # 31 format_error, mixed_formats
        b'{"messages": [{"role": "user", "content": "bad \\ud800 text"}, {"role": "assistant", "content": "x"}]}',  # 32 invalid_unicode
    ]
    return b"\n".join(lines) + b"\n"


# --- writing ----------------------------------------------------------------------------------------

def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


MANIFEST = {
    "version": 1,
    "datasets": {
        "tickets": {"splits": {"train": "tickets/train.jsonl", "val": "tickets/val.jsonl",
                               "test": "tickets/test.jsonl"}},
        "extraction": {"splits": {"train": "extraction/train.jsonl", "val": "extraction/val.jsonl",
                                  "test": "extraction/test.jsonl"}},
        "domain_qa": {"splits": {"train": "domain_qa/train.jsonl", "val": "domain_qa/val.jsonl",
                                 "test": "domain_qa/test.jsonl"}},
        "general": {"splits": {"train": "general/train.jsonl", "val": "general/val.jsonl"}},
        "preferences": {"splits": {"train": "preferences/train.jsonl"}},
    },
}


def build() -> dict[str, bytes]:
    """Every file of sample_data/ (relative path -> bytes), README excluded."""
    rng = random.Random(SEED)
    ticket_parts = split_tickets(tickets(rng, per_queue=116), rng)
    ext = extraction(rng, 220)
    qa = domain_qa(rng)
    gen = general(rng, 180)
    files = {
        "tickets/train.jsonl": _jsonl(ticket_parts["train"]),
        "tickets/val.jsonl": _jsonl(ticket_parts["val"]),
        "tickets/test.jsonl": _jsonl(ticket_parts["test"]),
        "fewshot/pool.jsonl": _jsonl(ticket_parts["fewshot"]),
        "extraction/train.jsonl": _jsonl(ext[:150]),
        "extraction/val.jsonl": _jsonl(ext[150:180]),
        "extraction/test.jsonl": _jsonl(ext[180:]),
        "domain_qa/train.jsonl": _jsonl(qa["train"]),
        "domain_qa/val.jsonl": _jsonl(qa["val"]),
        "domain_qa/test.jsonl": _jsonl(qa["test"]),
        "general/train.jsonl": _jsonl(gen[:150]),
        "general/val.jsonl": _jsonl(gen[150:]),
        "preferences/train.jsonl": _jsonl(preferences(ticket_parts["train"][:120], rng)),
        "broken/broken.jsonl": broken(),
        "manifest.json": (json.dumps(MANIFEST, indent=2) + "\n").encode("utf-8"),
    }
    return files


def write(out: Path) -> list[Path]:
    written = []
    for rel, data in build().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    args = parser.parse_args()
    paths = write(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e3:.0f} kB, under {args.out}")


if __name__ == "__main__":
    main()
