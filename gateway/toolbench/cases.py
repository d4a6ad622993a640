"""The eval set, generated from templates: `python -m gateway.toolbench.cases` rewrites cases.json.

Every case is written for this project (no public data adapted). A case is
    {"id", "category", "tools": [names], "messages": [...], "expected": [{"name", "arguments"}]}
where each expected argument maps to the list of acceptable values ("" in the list: it may be left out),
and `expected` is empty when no call is wanted. Categories:

    single      one tool declared, one call wanted
    choice      2-5 tools declared, one call to the right one wanted
    parallel    two calls wanted (order free)
    nested      array / array-of-objects arguments
    no_call     tools declared, a question that needs none
    multi_turn  an earlier call and its result in the conversation, then a new call wanted
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

CASES_PATH = Path(__file__).with_name("cases.json")

FUNCTIONS = {
    "get_weather": {
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}},
    "get_time": {
        "description": "Get the current local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    "add": {
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}},
    "multiply": {
        "description": "Multiply two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}},
    "search_web": {
        "description": "Search the web for a query.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    "get_stock_price": {
        "description": "Get the latest stock price for a ticker symbol.",
        "parameters": {"type": "object", "properties": {"symbol": {"type": "string", "description": "e.g. AAPL"}},
                       "required": ["symbol"]}},
    "translate": {
        "description": "Translate text into another language.",
        "parameters": {"type": "object", "properties": {
            "text": {"type": "string"}, "target_language": {"type": "string"}},
            "required": ["text", "target_language"]}},
    "send_email": {
        "description": "Send an email.",
        "parameters": {"type": "object", "properties": {
            "to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "subject"]}},
    "set_thermostat": {
        "description": "Set the thermostat to a temperature in degrees.",
        "parameters": {"type": "object", "properties": {"temperature": {"type": "integer"}},
                       "required": ["temperature"]}},
    "convert_currency": {
        "description": "Convert an amount of money from one currency to another.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"}},
            "required": ["amount", "from_currency", "to_currency"]}},
    "add_todo_items": {
        "description": "Add items to the todo list.",
        "parameters": {"type": "object", "properties": {"items": {"type": "array", "items": {
            "type": "object", "properties": {"title": {"type": "string"},
                                             "priority": {"type": "string", "enum": ["low", "high"]}},
            "required": ["title"]}}}, "required": ["items"]}},
    "create_event": {
        "description": "Create a calendar event with attendees.",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string"}, "attendees": {"type": "array", "items": {"type": "string"}}},
            "required": ["title", "attendees"]}},
    "sum_numbers": {
        "description": "Add up a list of numbers.",
        "parameters": {"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
                       "required": ["numbers"]}},
}

CITIES = ["Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Sydney", "Toronto", "Lima"]
TICKERS = ["AAPL", "MSFT", "TSLA", "AMZN", "NVDA"]
LANGUAGES = ["French", "Spanish", "German", "Italian"]
PHRASES = ["good morning", "thank you", "where is the station", "I like tea"]
NAMES = ["alice@example.com", "bob@example.com", "carol@example.com"]
PEOPLE = ["Alice", "Bob", "Carol", "Dan", "Eve"]
CHORES = ["buy milk", "call mom", "pay rent", "walk the dog", "clean the kitchen", "book dentist"]
UNIT = {"unit": ("celsius", "fahrenheit", "")}


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, **FUNCTIONS[name]}}


def call(name: str, **arguments) -> dict:
    """A tuple lists the acceptable values; anything else is the one acceptable value."""
    return {"name": name, "arguments": {k: list(v) if isinstance(v, tuple) else [v] for k, v in arguments.items()}}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _single(rng: random.Random):
    templates = [
        ("get_weather", "What's the weather like in {city}?", lambda c: call("get_weather", city=c, **UNIT)),
        ("get_weather", "Is it raining in {city} right now?", lambda c: call("get_weather", city=c, **UNIT)),
        ("get_time", "What time is it in {city}?", lambda c: call("get_time", city=c)),
        ("search_web", "Search the web for {city} travel tips.",
         lambda c: call("search_web", query=(f"{c} travel tips", f"travel tips for {c}"))),
    ]
    for (name, text, expect), city in itertools.product(templates, CITIES):
        yield [name], user(text.format(city=city)), [expect(city)]
    for a, b in [(3, 4), (12, 30), (7, 8), (100, 250), (2.5, 1.5)]:
        yield ["add"], user(f"What is {a} plus {b}?"), [call("add", a=a, b=b)]
    for symbol in TICKERS:
        yield ["get_stock_price"], user(f"What is the stock price of {symbol}?"), [call("get_stock_price", symbol=symbol)]


def _choice(rng: random.Random):
    pool = ["get_weather", "get_time", "add", "multiply", "search_web", "get_stock_price", "translate",
            "set_thermostat", "convert_currency", "send_email"]
    asks = [
        ("get_weather", lambda c: f"How warm is it in {c} today?", lambda c: call("get_weather", city=c, **UNIT)),
        ("get_time", lambda c: f"Tell me the current time in {c}.", lambda c: call("get_time", city=c)),
        ("multiply", lambda i: f"What is {i + 3} times {i + 6}?", lambda i: call("multiply", a=i + 3, b=i + 6)),
        ("set_thermostat", lambda i: f"Set the thermostat to {18 + i} degrees.",
         lambda i: call("set_thermostat", temperature=18 + i)),
        ("translate", lambda i: f"Translate '{PHRASES[i % 4]}' into {LANGUAGES[i % 4]}.",
         lambda i: call("translate", text=PHRASES[i % 4], target_language=LANGUAGES[i % 4])),
        ("convert_currency", lambda i: f"Convert {10 * (i + 1)} US dollars to euros.",
         lambda i: call("convert_currency", amount=10 * (i + 1), from_currency=("USD", "US dollars", "dollars"),
                        to_currency=("EUR", "euros", "euro"))),
        ("get_stock_price", lambda i: f"How much is one share of {TICKERS[i % 5]}?",
         lambda i: call("get_stock_price", symbol=TICKERS[i % 5])),
        ("send_email", lambda i: f"Email {NAMES[i % 3]} with the subject 'Lunch'.",
         lambda i: call("send_email", to=NAMES[i % 3], subject="Lunch", body=("", "Lunch"))),
    ]
    for i in range(50):
        name, ask, expect = asks[i % len(asks)]
        arg = CITIES[i % len(CITIES)] if name in ("get_weather", "get_time") else i % 5
        others = rng.sample([p for p in pool if p != name], 1 + i % 4)
        names = [*others, name]
        rng.shuffle(names)
        yield names, user(ask(arg)), [expect(arg)]


def _parallel(rng: random.Random):
    for a, b in itertools.islice(itertools.combinations(CITIES, 2), 15):
        yield ["get_weather"], user(f"What's the weather in {a} and in {b}?"), [
            call("get_weather", city=a, **UNIT), call("get_weather", city=b, **UNIT)]
    for a, b in itertools.islice(itertools.combinations(CITIES, 2), 20, 35):
        yield ["get_weather", "get_time"], user(f"What's the weather in {a} and what time is it in {b}?"), [
            call("get_weather", city=a, **UNIT), call("get_time", city=b)]


def _nested(rng: random.Random):
    for i in range(12):
        chores = rng.sample(CHORES, 2 + i % 2)
        text = "Add these to my todo list: " + ", ".join(chores) + "."
        yield ["add_todo_items"], user(text), [
            call("add_todo_items", items=[{"title": c} for c in chores])]
    for i in range(10):
        people = rng.sample(PEOPLE, 2 + i % 2)
        title = ["Team sync", "Lunch", "Planning", "Review", "Standup"][i % 5]
        text = f"Create an event called '{title}' with " + " and ".join(people) + "."
        yield ["create_event", "send_email"], user(text), [
            call("create_event", title=title, attendees=people)]
    for i in range(8):
        numbers = [rng.randint(1, 50) for _ in range(3 + i % 3)]
        text = "What is the sum of " + ", ".join(map(str, numbers)) + "?"
        yield ["sum_numbers", "multiply"], user(text), [call("sum_numbers", numbers=numbers)]


def _no_call(rng: random.Random):
    questions = ["Hi there!", "Tell me a short joke.", "Thanks, that's all.", "What is your name?",
                 "Write a haiku about autumn.", "Who wrote Romeo and Juliet?", "Say goodbye in French.",
                 "What colour is the sky?", "Give me a word that rhymes with cat.", "How are you today?"]
    toolsets = [["get_weather"], ["get_stock_price", "add"], ["get_time", "search_web", "set_thermostat"]]
    for i in range(25):
        yield toolsets[i % 3], user(questions[i % len(questions)]), []


def _multi_turn(rng: random.Random):
    for i in range(25):
        first, second = CITIES[i % 10], CITIES[(i + 3) % 10]
        fn = ["get_weather", "get_time"][i % 2]
        result = {"get_weather": '{"temperature": 21, "condition": "sunny"}', "get_time": '{"time": "14:05"}'}[fn]
        messages = [
            {"role": "user", "content": f"{'Weather' if fn == 'get_weather' else 'Time'} in {first}?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{i}", "type": "function",
                "function": {"name": fn, "arguments": json.dumps({"city": first})}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": result},
            {"role": "assistant", "content": f"Here it is for {first}: {result}"},
            {"role": "user", "content": f"And in {second}?"},
        ]
        extra = UNIT if fn == "get_weather" else {}
        yield ["get_weather", "get_time"], messages, [call(fn, city=second, **extra)]


GENERATORS = {"single": _single, "choice": _choice, "parallel": _parallel, "nested": _nested,
              "no_call": _no_call, "multi_turn": _multi_turn}


def generate() -> list[dict]:
    rng = random.Random(8)
    cases = []
    for category, generator in GENERATORS.items():
        for i, (tools, messages, expected) in enumerate(generator(rng)):
            cases.append({"id": f"{category}-{i:03d}", "category": category, "tools": tools,
                          "messages": messages, "expected": expected})
    return cases


def load() -> tuple[list[dict], dict[str, dict]]:
    data = json.loads(CASES_PATH.read_text())
    return data["cases"], data["functions"]


if __name__ == "__main__":
    lines = ",\n".join(json.dumps(case) for case in generate())
    CASES_PATH.write_text(f'{{"functions": {json.dumps(FUNCTIONS)},\n"cases": [\n{lines}\n]}}\n')
