"""Drives `medscribe serve` with the official OpenAI Python client (PyPI `openai`), as a hospital's
existing code would, and prints what came back as one JSON object for tests/it/serve.rs to check.

Usage: python serve_openai_client.py BASE_URL TOKEN WAV SCHEMA_JSON
"""

import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, token, wav = sys.argv[1:4]
    client = OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0)
    result = {"models": [model.id for model in client.models.list().data]}

    def transcribe(**options):
        with open(wav, "rb") as audio:
            return client.audio.transcriptions.create(file=audio, **options)

    result["json_text"] = transcribe(model="whisper-1").text
    verbose = transcribe(model=result["models"][0], response_format="verbose_json")
    result["verbose_text"] = verbose.text
    result["verbose_duration"] = verbose.duration
    result["segments"] = [
        {"start": s.start, "end": s.end, "text": s.text} for s in verbose.segments
    ]
    for form in ("text", "srt", "vtt"):
        result[form] = transcribe(model="whisper-1", response_format=form)

    chat = {
        "model": result["models"][1],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Write one sentence about chest pain."},
        ],
        "max_tokens": 24,
    }
    reply = client.chat.completions.create(**chat)
    result["chat"] = reply.choices[0].message.content
    result["chat_finish"] = reply.choices[0].finish_reason
    result["chat_usage"] = reply.usage.completion_tokens
    pieces = []
    for chunk in client.chat.completions.create(stream=True, **chat):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    result["chat_streamed"] = "".join(pieces)

    schema = json.loads(sys.argv[4])
    reply = client.chat.completions.create(
        model=result["models"][1],
        messages=[{"role": "user", "content": "A 54-year-old man has had chest pain for two days. Triage him."}],
        max_tokens=200,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "triage", "strict": True, "schema": schema},
        },
    )
    result["chat_json"] = reply.choices[0].message.content

    try:
        OpenAI(base_url=f"{base_url}/v1", api_key="not-the-token", max_retries=0).models.list()
        result["wrong_key"] = "accepted"
    except openai.AuthenticationError as error:
        result["wrong_key"] = error.status_code
    try:
        transcribe(model="gpt-4o-transcribe")
        result["wrong_model"] = "accepted"
    except openai.BadRequestError as error:
        result["wrong_model"] = error.code
    print(json.dumps(result))


if __name__ == "__main__":
    main()
