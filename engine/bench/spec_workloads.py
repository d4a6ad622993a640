"""Chat prompts for `flowgate bench spec`: copy-heavy work (the output repeats the prompt) and free-form chat."""

from __future__ import annotations

PEOPLE = [
    ("Maria Gonzalez", "maria.gonzalez@northwind.io", "Northwind Traders", "Lisbon", "+351 21 555 0142"),
    ("Kenji Watanabe", "k.watanabe@sakura-robotics.jp", "Sakura Robotics", "Osaka", "+81 6 5550 1187"),
    ("Amelia Clarke", "amelia.clarke@fernbrook.co.uk", "Fernbrook Analytics", "Leeds", "+44 113 496 0321"),
    ("David Okafor", "david.okafor@lagoonpay.ng", "LagoonPay", "Lagos", "+234 1 555 0199"),
    ("Sofia Lindqvist", "sofia@nordljus.se", "Nordljus Energy", "Gothenburg", "+46 31 555 0176"),
    ("Rahul Mehta", "rahul.mehta@bluepeak.in", "BluePeak Logistics", "Pune", "+91 20 5550 3344"),
    ("Chloe Martin", "chloe.martin@atelier-rive.fr", "Atelier Rive", "Lyon", "+33 4 55 50 12 34"),
    ("Lucas Becker", "l.becker@hafenwerk.de", "Hafenwerk GmbH", "Hamburg", "+49 40 5550 7788"),
]

CODE = '''def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal = subtotal + item["price"] * item["quantity"]
    tax = subtotal * tax_rate
    return subtotal + tax


def describe(items):
    lines = []
    for item in items:
        lines.append(f"{item['name']}: {item['quantity']} x {item['price']}")
    return "\\n".join(lines)
'''

CHAT = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain why the sky is blue to a ten-year-old.",
    "Give me five ideas for a rainy Sunday afternoon.",
    "What are the pros and cons of working from home?",
    "Describe your ideal breakfast in detail.",
    "Write a friendly email inviting a colleague to a team lunch.",
    "How do plants make their food? Explain simply.",
    "Suggest a weekly exercise plan for a beginner.",
]


def copy_heavy() -> list[list[dict]]:
    """Extraction to JSON, tool calls whose arguments repeat the prompt's values, code edits: interleaved, so
    that the first few requests (all that concurrency 1 runs) hold each kind."""
    extraction, code = [], []
    for name, email, company, city, phone in PEOPLE:
        text = (f"Hi, this is {name} from {company} in {city}. You can reach me at {email} or call {phone}. "
                f"We would like a quote for 40 units.")
        extraction.append([{"role": "user", "content": (
            "Extract the contact from this message as JSON with the keys name, email, company, city and phone. "
            f"Copy the values exactly.\n\nMessage: {text}")}])
        extraction.append([{"role": "user", "content": (
            "Call the function create_contact with the arguments name, email, company, city and phone taken "
            f"from this message. Reply with the function call as JSON only.\n\nMessage: {text}")}])
    code.append([{"role": "user", "content": (
        f"Rename the variable subtotal to net_total in this code and return the whole code:\n\n{CODE}")}])
    code.append([{"role": "user", "content": f"Add a docstring to each function and return the whole code:\n\n{CODE}"}])
    prompts = []
    for i in range(0, len(extraction), 2):
        prompts += [*extraction[i : i + 2], code[i // 2 % len(code)]]
    return prompts


def chat() -> list[list[dict]]:
    return [[{"role": "user", "content": c}] for c in CHAT]
