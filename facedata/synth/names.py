"""Names in the raw tree: identity folders, sequences and the fixed list of sentences.

Sentence i means the same sentence for every identity (and every seed), as in the corpus, where all identities read
the same sentence list; the first ``sentences`` names are taken in order.
"""

from __future__ import annotations

import numpy as np

# Entity ids of the corpus, in the spec's order (v1 then v2).
ENTITY_IDS: tuple[str, ...] = (
    "002757580", "002539136", "6674443", "6795937", "8870559", "2183941", "002643814",
    "5372021", "7889059", "002914589", "5067077", "002421669", "002645310",
)
N_V1_ENTITIES = 10

NEUTRAL_SEQUENCE = "E001_Neutral_Eyes_Open"
EXPRESSION_SEQUENCE = "EXP_ROM07_Facial_Expressions"

# Invented sentences in the corpus' naming style: words joined by "_", hyphens, capitals and digits kept.
# The last N_FAULT_SENTENCES are reserved for the fault catalogue, so regular sentences never collide with them.
SENTENCES: tuple[str, ...] = (
    "SEN_a_voice_spoke_near-at-hand",
    "SEN_did_Shawn_catch_that_big_goose_without_help",
    "SEN_the_old_ferry_crossed_at_dawn",
    "SEN_bring_the_7_blue_crates_to_the_dock",
    "SEN_Maria_left_her_umbrella_on-board",
    "SEN_a_quiet_fog_rolled_over_the_hills",
    "SEN_we_met_at_gate_B12_by_noon",
    "SEN_please_pass_the_salt_and_the_lemon",
    "SEN_the_kettle_whistled_twice_then_stopped",
    "SEN_Oliver_painted_the_fence_bright_green",
    "SEN_every_Tuesday_the_market_opens_early",
    "SEN_she_found_3_coins_beneath_the_rug",
    "SEN_the_well-worn_path_led_to_a_lake",
    "SEN_how_far_is_it_to_the_next_town",
    "SEN_Ahmed_fixed_the_radio_in_ten_minutes",
    "SEN_the_wind_tore_the_kite_from_his_hands",
    "SEN_our_team_scored_in_the_90th_minute",
    "SEN_a_cup_of_hot_cocoa_warms_the_soul",
    "SEN_they_argued_about_the_half-price_tickets",
    "SEN_Lucy_hummed_a_tune_while_baking_bread",
    "SEN_the_pilot_announced_a_short_delay",
    "SEN_he_keeps_2_cats_and_a_parrot",
    "SEN_nobody_noticed_the_clock_had_stopped",
    "SEN_the_orchard_smells_of_ripe_apples",
    "SEN_Uncle_Bob_drove_up_from_Ohio",
    "SEN_a_loose_board_creaked_under_my_foot",
    "SEN_the_choir_sang_in_the_old_chapel",
    "SEN_move_the_meeting_to_room_4-B",
    "SEN_the_river_rose_after_three_days_of_rain",
    "SEN_Yuki_writes_letters_with_a_fountain_pen",
    "SEN_fresh_paint_covered_the_ugly_stain",
    "SEN_the_museum_closes_at_5_on_Sundays",
    "SEN_a_thin_crust_of_ice_formed_overnight",
    "SEN_why_would_anyone_buy_a_purple_sofa",
    "SEN_the_mayor_cut_the_ribbon_at_noon",
    "SEN_Grandpa_told_stories_of_the_sea",
    "SEN_we_ran_out_of_milk_again",
    "SEN_the_tall_man_wore_a_checkered_scarf",
    "SEN_an_owl_hooted_from_the_pine_tree",
    "SEN_Peter_packed_the_tent_and_the_stove",
    "SEN_the_bus_to_Leeds_leaves_at_6-30",
    "SEN_soft_music_drifted_from_the_cafe",
    "SEN_her_brother_won_the_chess_match",
    "SEN_the_dog_chased_its_tail_in_circles",
    "SEN_a_bright_star_hung_above_the_roofs",
    "SEN_Jenny_and_Mark_moved_to_Toronto",
    "SEN_the_recipe_calls_for_two_eggs",
    "SEN_keep_the_receipt_for_the_blue_jacket",
    "SEN_thunder_echoed_across_the_valley",
    "SEN_the_children_built_a_snow_fort",
    "SEN_my_phone_slipped_into_the_pond",
    "SEN_the_baker_sold_out_by_mid-morning",
    "SEN_a_red_van_blocked_the_driveway",
    "SEN_Tom_forgot_the_key_under_the_mat",
    "SEN_the_lantern_flickered_and_went_out",
    "SEN_she_wrapped_the_gift_in_gold_paper",
    "SEN_the_tide_went_out_leaving_shells",
    "SEN_bees_buzzed_around_the_lavender",
    "SEN_the_first_snow_fell_on_November_2nd",
    "SEN_a_stray_cat_slept_on_the_porch",
)
N_FAULT_SENTENCES = 6
MAX_SENTENCES = len(SENTENCES) - N_FAULT_SENTENCES
FAULT_SENTENCES: tuple[str, ...] = SENTENCES[-N_FAULT_SENTENCES:]

# Short expression sequences that host the per-frame faults (one fault each), named like the corpus' E0xx list.
FAULT_EXPRESSIONS: tuple[str, ...] = (
    "E002_Swallow",
    "E008_Smile_Mouth_Closed",
    "E013_Open_Mouth_Stretch",
    "E021_Jaw_Open_Wide",
    "E027_Lips_Pucker",
    "E035_Cheeks_Puffed",
    "E041_Brows_Up",
    "E048_Eyes_Squint",
    "E052_Nose_Wrinkle",
)

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def sentence_words(name: str) -> list[str]:
    """The spoken words of a sentence name, lower case, digits spelled out (``"SEN_gate_B12"`` -> gate b one two)."""
    words: list[str] = []
    for token in name.removeprefix("SEN_").replace("-", "_").split("_"):
        letters = ""
        for ch in token.lower():
            if ch.isdigit():
                if letters:
                    words.append(letters)
                    letters = ""
                words.append(_DIGIT_WORDS[int(ch)])
            elif ch.isalpha():
                letters += ch
        if letters:
            words.append(letters)
    return words


def identity_folder(entity_index: int, rng: np.random.Generator) -> str:
    """``m--<YYYYMMDD>--<HHMM>--<entity>--GHS`` with a plausible capture date (v1 in 2018, v2 in 2019).

    Args:
        entity_index: position in ``ENTITY_IDS``.
        rng: the identity's stream for names.
    """
    entity = ENTITY_IDS[entity_index]
    if entity_index < N_V1_ENTITIES:
        month, day = int(rng.integers(2, 7)), int(rng.integers(1, 29))
        return f"m--2018{month:02d}{day:02d}--0000--{entity}--GHS"
    month, day = int(rng.integers(5, 8)), int(rng.integers(1, 29))
    hour, minute = int(rng.integers(9, 18)), int(rng.integers(0, 60))
    return f"m--2019{month:02d}{day:02d}--{hour:02d}{minute:02d}--{entity}--GHS"
