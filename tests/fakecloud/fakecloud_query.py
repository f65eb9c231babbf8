"""fakecloud's query evaluation: Firebase REST queries (orderBy, startAt/endAt/equalTo,
limitToFirst/Last) over a value, with Firebase's ordering (null < false < true < numbers <
strings < objects, ties by key; keys that are 32-bit integers first; strings by UTF-16 code
units). Which queries are allowed at all is firebase_rules.check_query's business.
"""
import json
import re

from fakecloud_data import get_at, split

INT_KEY = re.compile(r"-?0*[0-9]{1,10}")


def int_key(k):
    """Firebase's integer keys: ^-?(0*)\\d{1,10}$ within 32 bits, leading zeros too ("007")."""
    if INT_KEY.fullmatch(k):
        v = int(k)
        if -2**31 <= v < 2**31:
            return v
    return None


def key_sort(k):
    v = int_key(k)  # equal integers: the shorter key first
    return (0, v, len(k), k.encode("utf-16-be", "surrogatepass")) if v is not None else \
        (1, 0, 0, k.encode("utf-16-be", "surrogatepass"))


def value_sort(v):
    if v is None:
        return (0,)
    if v is False:
        return (1,)
    if v is True:
        return (2,)
    if isinstance(v, (int, float)):
        return (3, v)
    if isinstance(v, str):
        return (4, v.encode("utf-16-be", "surrogatepass"))
    return (5,)


def run_query(value, query):
    """Firebase REST query semantics over `value`; None when the request has no query."""
    if "orderBy" not in query:  # firebase_rules.check_query refused limits without it
        return None
    by = json.loads(query["orderBy"][0])
    if not isinstance(value, dict):
        return value
    def sort_of(k):
        if by == "$key":
            return key_sort(k)
        if by == "$value":
            return value_sort(value[k])
        return value_sort(get_at(value[k], split(by)))
    items = sorted(value.keys(), key=lambda k: (sort_of(k), key_sort(k)))
    bounds = {}
    for name in ("startAt", "endAt", "equalTo"):
        if name in query:
            b = json.loads(query[name][0])
            bounds[name] = key_sort(b) if by == "$key" else value_sort(b)
    if "equalTo" in bounds:
        bounds["startAt"] = bounds["endAt"] = bounds["equalTo"]
    if "startAt" in bounds:
        items = [k for k in items if sort_of(k) >= bounds["startAt"]]
    if "endAt" in bounds:
        items = [k for k in items if sort_of(k) <= bounds["endAt"]]
    if "limitToFirst" in query:
        items = items[:int(query["limitToFirst"][0])]
    if "limitToLast" in query:
        n = int(query["limitToLast"][0])
        items = items[-n:] if n else []
    return {k: value[k] for k in items} or None
