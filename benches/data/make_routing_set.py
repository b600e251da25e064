#!/usr/bin/env python3
"""Writes routing_labelled.jsonl: a SYNTHETIC labelled routing set (no public routing benchmark ships its
data in a registry package: RouteLLM's PyPI wheel has no data, it downloads it at run time).

Where every label comes from: each prompt is made from one template of one category below; its `class` is the
category, and its per-model `quality` is the category's row in QUALITY, set by hand from one assumption,
stated here and in docs/benchmarks.md: a small model (gpt-4o-mini tier) answers short lookups, rewrites,
conversions and translations as well as a large one (gpt-4o tier), partly summaries, and poorly proofs,
concurrent code, deep comparisons, legal drafting and debugging. No model was run to get these numbers.
`output_tokens`, the answer's length used for cost, is the category's row in OUTPUT_TOKENS: also assumed.
`split` is "train" for the router's labelled examples and "test" for the prompts it is scored on; the
fillers of the two splits do not overlap. Deterministic: `python3 make_routing_set.py > routing_labelled.jsonl`.
"""
import json
import random

QUALITY = {  # category -> (quality of mini, quality of large), 0..1
    "lookup": (1.0, 1.0),
    "rewrite": (1.0, 1.0),
    "convert": (1.0, 1.0),
    "translate": (0.95, 1.0),
    "summary": (0.8, 1.0),
    "proof": (0.2, 1.0),
    "concurrency": (0.3, 1.0),
    "compare": (0.4, 1.0),
    "legal": (0.3, 1.0),
    "debug": (0.3, 1.0),
}
OUTPUT_TOKENS = {  # category -> tokens of a typical answer (assumed)
    "lookup": 20, "rewrite": 30, "convert": 25, "translate": 20, "summary": 40,
    "proof": 600, "concurrency": 800, "compare": 700, "legal": 400, "debug": 500,
}
TEMPLATES = {
    "lookup": ["What is the capital of {place}?", "Which continent is {place} on?", "What currency does {place} use?"],
    "rewrite": ["Fix the spelling in this sentence: {phrase}", "Rewrite in title case: {phrase}",
                "Make this sentence more polite: {phrase}"],
    "convert": ["Convert {n} {unit} to metric units", "How many seconds are in {n} {span}?",
                "Convert {n} degrees Fahrenheit to Celsius"],
    "translate": ["Translate '{phrase}' into {lang}", "Say '{phrase}' in {lang}"],
    "summary": ["Summarise this note in one line: {phrase}", "Give a two word title for: {phrase}"],
    "proof": ["Prove that {statement}", "Give a rigorous proof that {statement}, with every lemma"],
    "concurrency": ["Write a lock-free {structure} in {code} with linearizability tests",
                    "Implement a wait-free {structure} in {code} and argue its memory ordering"],
    "compare": ["Compare the consistency guarantees of {db} and {db2} under network partitions, step by step",
                "Analyse failure recovery in {db} versus {db2} with quorum arithmetic"],
    "legal": ["Draft a contract clause limiting liability for {thing} under {law}",
              "Write an indemnification clause covering {thing} that holds under {law}"],
    "debug": ["Find the race condition in this {code} code that uses {primitive} and explain the interleaving",
              "Diagnose a deadlock in a {code} service that combines {primitive} with async tasks"],
}
FILL = {  # (train fillers, test fillers)
    "place": (["France", "Japan", "Kenya", "Chile", "Norway", "Vietnam"], ["Peru", "Egypt", "Canada", "Poland", "Ghana"]),
    "phrase": (["teh cat sat on teh mat", "we recieve the package tomorow", "send me the report now",
                "meeting moved to friday", "lunch is at noon today"],
               ["the wether is nice", "close the door behind you", "invoice attached for march",
                "server restart at midnight", "train leaves at nine"]),
    "n": (["3", "12", "40"], ["7", "25", "90"]),
    "unit": (["miles", "pounds", "gallons"], ["feet", "ounces", "inches"]),
    "span": (["hours", "days"], ["weeks", "minutes"]),
    "lang": (["Spanish", "German", "Italian"], ["French", "Portuguese", "Dutch"]),
    "statement": (["there are infinitely many primes", "the square root of two is irrational",
                   "every bounded monotone sequence converges"],
                  ["a tree with n nodes has n minus one edges", "the harmonic series diverges",
                   "every finite group of prime order is cyclic"]),
    "structure": (["queue", "stack"], ["hash map", "ring buffer"]),
    "code": (["Rust", "C++"], ["Go", "Java"]),
    "db": (["PostgreSQL", "Cassandra"], ["MongoDB", "CockroachDB"]),
    "db2": (["etcd", "DynamoDB"], ["Spanner", "Redis Cluster"]),
    "thing": (["data loss", "service outages"], ["late delivery", "third party claims"]),
    "law": (["English law", "New York law"], ["German law", "Delaware law"]),
    "primitive": (["a mutex", "atomics"], ["condition variables", "channels"]),
}


def fill(template, split, rng):
    out = template
    for key, (train, test) in FILL.items():
        token = "{" + key + "}"
        while token in out:
            out = out.replace(token, rng.choice(train if split == "train" else test), 1)
    return out


def main():
    rng = random.Random(19)
    rows, seen = [], set()
    for split, per_category in (("train", 12), ("test", 30)):
        for category, templates in TEMPLATES.items():
            made, tries = 0, 0
            while made < per_category and tries < 1000:
                tries += 1
                prompt = fill(rng.choice(templates), split, rng)
                if prompt in seen:
                    continue
                seen.add(prompt)
                mini, large = QUALITY[category]
                rows.append({"prompt": prompt, "class": category, "split": split,
                             "quality": {"mini": mini, "large": large},
                             "output_tokens": OUTPUT_TOKENS[category]})
                made += 1
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
